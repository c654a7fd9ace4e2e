"""Validation rules: exact ``file:line: Kind/ns/name: field: message`` for each, plus the CLI."""
# ruff: noqa: E501  (expected issue messages are kept whole, one string per line)

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshloop.mesh import add_validate_command, load, load_and_validate, validate
from meshloop.mesh.config import MeshConfig
from meshloop.mesh.validate_cli import cmd_validate

ROOT = Path(__file__).resolve().parents[2]
BOOKINFO = ROOT / "examples" / "bookinfo"
BROKEN = ROOT / "tests" / "data" / "mesh_broken"

# file in tests/data/mesh_broken -> the exact issues it produces (path relative to the directory)
BROKEN_CASES = {
    "weights.yaml": [
        "8: VirtualService/default/weights: spec.http[0].route: destination weights sum to 110; they must total 100"
    ],
    "unknown-host.yaml": [
        "10: VirtualService/default/unknown-host: spec.http[0].route[0].destination.host: unknown host "
        '"reviewz.default.svc.cluster.local": no Service or ServiceEntry defines it'
    ],
    "unknown-subset.yaml": [
        '11: VirtualService/default/unknown-subset: spec.http[0].route[0].destination.subset: subset "v9" is not '
        'defined by any DestinationRule for host "reviews.default.svc.cluster.local"'
    ],
    "duplicate-name.yaml": [
        "11: DestinationRule/default/ratings: metadata.name: duplicate DestinationRule default/ratings; "
        "first defined at {dir}/duplicate-name.yaml:4"
    ],
    "host-conflict.yaml": [
        '17: VirtualService/default/ratings-b: spec.hosts[0]: host "ratings.default.svc.cluster.local" is already '
        "routed for sidecars by VirtualService default/ratings-a ({dir}/host-conflict.yaml:6); "
        "Istio merges VirtualServices only on gateways"
    ],
    "shadowed-route.yaml": [
        "12: VirtualService/default/shadowed: spec.http[1]: unreachable: spec.http[0] before it matches every request"
    ],
    "bad-duration.yaml": [
        '10: VirtualService/default/bad-duration: spec.http[0].timeout: invalid duration "5 seconds": use a number '
        'with a unit, e.g. "1s", "500ms", "1.5s", "1m30s"'
    ],
    "negative-value.yaml": [
        "11: VirtualService/default/negative-value: spec.http[0].retries.attempts: must be >= 0, got -1"
    ],
    "percentage.yaml": [
        "14: VirtualService/default/percentage: spec.http[0].fault.abort.percentage.value: must be <= 100, got 150"
    ],
    "gateway-conflict.yaml": [
        "10: Gateway/default/conflict: spec.servers[1].port.protocol: port 80 is already declared with protocol "
        "HTTP by spec.servers[0]",
        '14: Gateway/default/conflict: spec.servers[2].hosts[0]: host "a.example.com" on port 80 is already '
        "served by spec.servers[0]",
    ],
    "service-entry-ports.yaml": [
        "11: ServiceEntry/default/external-api: spec.ports[1].number: port 443 is already declared by spec.ports[0]"
    ],
    "deny-no-rules.yaml": [
        "8: AuthorizationPolicy/default/deny-nothing: spec.rules: action DENY with no rules matches no request, "
        "so it denies nothing"
    ],
    "unknown-enum.yaml": [
        "9: DestinationRule/default/unknown-enum: spec.trafficPolicy.loadBalancer.simple: unknown value "
        "\"ROUND_ROBBIN\"; expected one of 'UNSPECIFIED', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', "
        "'LEAST_REQUEST' or 'LEAST_CONN'"
    ],
    "unknown-field.yaml": ["8: PeerAuthentication/default/default: spec.mtls.strict: unknown field"],
    "unknown-kind.yaml": [
        '5: Sidecar/default/default: kind: unknown kind "Sidecar"; meshloop reads VirtualService, DestinationRule, '
        "ServiceEntry, Gateway, WorkloadEntry, PeerAuthentication, AuthorizationPolicy, Service, EndpointSlice"
    ],
    "syntax-error.yaml": [
        "7: YAML syntax error: while parsing a flow sequence expected ',' or ']', but got ':'"
    ],
}
WARNINGS = {"shadowed-route.yaml", "deny-no-rules.yaml"}


@pytest.fixture(scope="module")
def broken_issues() -> list[str]:
    config, issues = load([BROKEN])
    return [f"{i.render()}|{i.severity}" for i in sorted(set(issues) | set(validate(config)))]


def test_bookinfo_example_validates_cleanly() -> None:
    config, issues = load_and_validate([BOOKINFO])
    assert issues == []
    assert config is not None
    assert config.counts()["VirtualService"] == 4 and config.counts()["Service"] == 4


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_each_broken_file_reports_exactly_its_issues(name: str, broken_issues: list[str]) -> None:
    prefix = f"{BROKEN / name}:"
    severity = "warning" if name in WARNINGS else "error"
    expected = [f"{prefix}{line.format(dir=BROKEN)}|{severity}" for line in BROKEN_CASES[name]]
    assert [i for i in broken_issues if i.startswith(prefix)] == expected


def test_base_file_of_broken_dir_is_clean(broken_issues: list[str]) -> None:
    assert not [i for i in broken_issues if i.startswith(f"{BROKEN / '00-services.yaml'}:")]
    assert len(broken_issues) == sum(len(v) for v in BROKEN_CASES.values())


def check(tmp_path: Path, text: str) -> list[str]:
    """Validate ``text`` (plus two Services) and return issues rendered relative to the file."""
    base = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 80}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec: {ports: [{port: 80}]}\n"
    )
    (tmp_path / "base.yaml").write_text(base)
    f = tmp_path / "case.yaml"
    f.write_text(text)
    config, issues = load([tmp_path])
    out = sorted(set(issues) | set(validate(config)))
    return [i.render().removeprefix(f"{f}:") + ("" if i.is_error else " (warning)") for i in out]


VS_HEAD = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"

RULE_CASES = [
    pytest.param(
        VS_HEAD + "  hosts: [x.example.com]\n  gateways: [gw, mesh, other/gw2]\n  http:\n"
        "  - route: [{destination: {host: reviews}}]\n",
        [
            '6: VirtualService/default/v: spec.gateways[0]: gateway "default/gw" not found',
            '6: VirtualService/default/v: spec.gateways[2]: gateway "other/gw2" not found',
        ],
        id="gateway-not-found",
    ),
    pytest.param(
        VS_HEAD + "  hosts: [x.example.com]\n  http:\n  - match: [{uri: {exact: /}}]\n"
        "  - redirect: {uri: /a}\n    route: [{destination: {host: reviews}}]\n",
        [
            "7: VirtualService/default/v: spec.http[0]: one of route, redirect, directResponse or delegate "
            "is required",
            "8: VirtualService/default/v: spec.http[1]: route and redirect cannot be combined",
        ],
        id="http-actions",
    ),
    pytest.param(
        VS_HEAD + "  hosts: [x.example.com]\n  http:\n  - route:\n    - destination: {host: reviews}\n"
        "    - destination: {host: ratings}\n",
        [
            "7: VirtualService/default/v: spec.http[0].route: destination weights sum to 0; they must total 100"
        ],
        id="weights-missing",
    ),
    pytest.param(
        VS_HEAD
        + "  hosts: [x.example.com]\n  tcp:\n  - route:\n    - {destination: {host: reviews}, weight: 60}\n"
        "    - {destination: {host: ratings}, weight: 60}\n",
        [
            "7: VirtualService/default/v: spec.tcp[0].route: destination weights sum to 120; they must total 100"
        ],
        id="tcp-weights",
    ),
    pytest.param(
        VS_HEAD + "  hosts: [x.example.com]\n  http:\n  - route: [{destination: {host: reviews}}]\n"
        "    mirror: {host: shadow.example.com}\n",
        [
            '8: VirtualService/default/v: spec.http[0].mirror.host: unknown host "shadow.example.com": no Service '
            "or ServiceEntry defines it"
        ],
        id="mirror-host",
    ),
    pytest.param(
        VS_HEAD + "  http:\n  - route: [{destination: {host: reviews}}]\n",
        ["4: VirtualService/default/v: spec.hosts: no hosts: usable only as a delegate (warning)"],
        id="no-hosts",
    ),
    pytest.param(
        VS_HEAD + "  hosts: [x.example.com]\n  http:\n  - match: [{uri: {prefix: /a}}, {}]\n"
        "    route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n",
        [
            "9: VirtualService/default/v: spec.http[1]: unreachable: spec.http[0] before it matches every request "
            "(warning)"
        ],
        id="empty-match-block-is-catch-all",
    ),
    pytest.param(
        VS_HEAD
        + "  hosts: [x.example.com]\n  http:\n  - match: [{uri: {prefix: /}, headers: {a: {exact: b}}}]\n"
        "    route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n",
        [],
        id="prefix-slash-with-header-is-not-catch-all",
    ),
    pytest.param(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: reviews\n"
        "  subsets:\n  - {name: v1}\n  - {name: v1}\n",
        [
            '8: DestinationRule/default/d: spec.subsets[1].name: subset "v1" is already defined by spec.subsets[0]'
        ],
        id="duplicate-subset",
    ),
    pytest.param(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n"
        "  hosts: [db.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b}\nspec:\n"
        "  hosts: [db.example.com]\n  ports:\n  - {number: 5432, name: pg, protocol: TLS}\n"
        "  - {number: 1, name: pg}\n  endpoints: [{address: 1.1.1.1}]\n  workloadSelector: {matchLabels: {a: b}}\n",
        [
            '14: ServiceEntry/default/b: spec.ports[0].protocol: host "db.example.com" port 5432 is declared as '
            "TCP by ServiceEntry default/a ({f}:6)",
            '15: ServiceEntry/default/b: spec.ports[1].name: port name "pg" is already used by spec.ports[0]',
            "17: ServiceEntry/default/b: spec.workloadSelector: set either endpoints or workloadSelector, not both",
        ],
        id="service-entry",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n"
        "  action: CUSTOM\n  rules: [{}]\n",
        ["5: AuthorizationPolicy/default/a: spec.provider: action CUSTOM requires provider.name"],
        id="custom-provider",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n"
        "  portLevelMtls: {8080: {mode: DISABLE}}\n",
        [
            "5: PeerAuthentication/default/p: spec.portLevelMtls: portLevelMtls requires a selector with matchLabels"
        ],
        id="port-level-mtls",
    ),
    pytest.param(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n"
        "  mtls: {mode: STRICTER}\n",
        [
            '5: PeerAuthentication/default/p: spec.mtls.mode: unknown value "STRICTER"; expected one of '
            "'UNSET', 'DISABLE', 'PERMISSIVE' or 'STRICT'"
        ],
        id="unknown-enum-mtls",
    ),
    pytest.param(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n"
        "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [a]}\n"
        "  - {port: {number: 81, name: http, protocol: HTTP}, hosts: [a]}\n",
        [
            '7: Gateway/default/g: spec.servers[1].port.name: port name "http" is already used by spec.servers[0]'
        ],
        id="gateway-port-names",
    ),
    pytest.param(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n"
        "  - {port: {number: 0, protocol: HTTP}, hosts: []}\n",
        [
            "6: Gateway/default/g: spec.servers[0].hosts: must not be empty",
            "6: Gateway/default/g: spec.servers[0].port.number: must be >= 1, got 0",
        ],
        id="gateway-schema",
    ),
]


@pytest.mark.parametrize(("text", "expected"), RULE_CASES)
def test_rule(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert check(tmp_path, text) == [e.replace("{f}", str(tmp_path / "case.yaml")) for e in expected]


def test_gateway_virtual_services_may_share_a_host(tmp_path: Path) -> None:
    gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n"
    gw += "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}\n"
    vs = (
        VS_HEAD.replace("{name: v}", "{{name: {}}}") + "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n"
    )
    vs += "  - match: [{{uri: {{prefix: /{}}}}}]\n    route: [{{destination: {{host: reviews}}}}]\n"
    text = gw + "---\n" + vs.format("one", "one") + "---\n" + vs.format("two", "two")
    assert check(tmp_path, text) == []


def test_short_names_resolve_relative_to_the_resource_namespace(tmp_path: Path) -> None:
    text = VS_HEAD.replace("{name: v}", "{name: v, namespace: other}")
    text += "  hosts: [x.example.com]\n  http:\n  - route: [{destination: {host: reviews}}]\n"
    assert check(tmp_path, text) == [
        "7: VirtualService/other/v: spec.http[0].route[0].destination.host: unknown host "
        '"reviews.other.svc.cluster.local": no Service or ServiceEntry defines it'
    ]


def _weights_config(weights: list[int]) -> MeshConfig:
    from meshloop.mesh.kubernetes import Service
    from meshloop.mesh.virtual_service import VirtualService

    svc = Service.model_validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    vs = VirtualService.model_validate(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "v"},
            "spec": {
                "hosts": ["s"],
                "http": [{"route": [{"destination": {"host": "s"}, "weight": w} for w in weights]}],
            },
        }
    )
    return MeshConfig.build([(svc, None), (vs, None)])


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=6))
def test_weights_accepted_iff_they_sum_to_100(weights: list[int]) -> None:
    issues = validate(_weights_config(weights))
    assert (issues == []) == (sum(weights) == 100)


@given(st.integers(min_value=1, max_value=99), st.integers(min_value=2, max_value=5))
def test_weights_that_total_100_are_accepted(first: int, parts: int) -> None:
    rest = 100 - first
    weights = [first] + [rest // (parts - 1)] * (parts - 2) + [rest - rest // (parts - 1) * (parts - 2)]
    assert validate(_weights_config(weights)) == []


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_validate_command(parser.add_subparsers())
    args = parser.parse_args(["validate", *argv])
    out, err = io.StringIO(), io.StringIO()
    return cmd_validate(args, out, err), out.getvalue(), err.getvalue()


def test_cli_clean_example() -> None:
    code, out, _ = run_cli(str(BOOKINFO))
    assert code == 0
    assert out == "23 resources, 0 errors, 0 warnings\n"


def test_cli_broken_directory() -> None:
    code, out, _ = run_cli(str(BROKEN))
    lines = out.splitlines()
    assert code == 1
    assert lines[-1] == "14 resources, 15 errors, 2 warnings"
    assert f"{BROKEN / 'weights.yaml'}:8: VirtualService/default/weights: spec.http[0].route: " in out
    assert sum(line.endswith("(warning)") for line in lines) == 2
    code, quiet, _ = run_cli("--quiet", str(BROKEN))
    assert code == 1 and len(quiet.splitlines()) == 15 and "(warning)" not in quiet


def test_cli_warnings_only_exit_zero() -> None:
    code, out, _ = run_cli(str(BROKEN / "deny-no-rules.yaml"))
    assert code == 0 and out.endswith("1 resources, 0 errors, 1 warnings\n")


def test_cli_missing_path_exits_2(tmp_path: Path) -> None:
    code, out, err = run_cli(str(BOOKINFO), str(tmp_path / "nope"))
    assert code == 2 and out == ""
    assert err == f"meshloop validate: {tmp_path / 'nope'}: no such file or directory\n"
