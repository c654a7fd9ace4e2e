"""AuthorizationPolicy → Envoy RBAC: field by field, evaluation order, selection, errors."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from meshloop.mesh.security import AuthorizationPolicy
from meshloop.xds.rbac import (
    FILTER_NAMES,
    RBAC_PER_ROUTE_TYPE,
    RBAC_TYPE,
    AuthorizationPolicyError,
    applicable_policies,
    authorization_warnings,
    http_filter_messages,
    inbound_http_filters,
    policy_problems,
    route_rbac_override,
    route_scoped_http_filters,
    selects,
)

LABELS = {"app": "backend", "version": "v1"}


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "shop") -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def envoy_policies(rule: dict[str, Any], action: str = "DENY", **kw: Any) -> dict[str, Any]:
    """The Envoy ``policies`` map of the one filter a one-rule policy produces."""
    filters = inbound_http_filters("shop", LABELS, [policy({"action": action, "rules": [rule]})], **kw)
    assert len(filters) == 1
    return dict(filters[0]["typed_config"]["rules"]["policies"])


def only_policy(rule: dict[str, Any], **kw: Any) -> dict[str, Any]:
    (translated,) = envoy_policies(rule, **kw).values()
    return dict(translated)


def authn(match: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principal_name": match}}


ANY = {"any": True}


def src(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"key": key}
    if values:
        condition["values"] = values
    if not_values:
        condition["notValues"] = not_values
    return {"when": [condition]}


PRINCIPAL_CASES = [
    (
        src(principals=["cluster.local/ns/default/sa/sleep"]),
        authn({"exact": "spiffe://cluster.local/ns/default/sa/sleep"}),
    ),
    (src(principals=["cluster.local/ns/default/*"]), authn({"prefix": "spiffe://cluster.local/ns/default/"})),
    (src(principals=["*/sa/sleep"]), authn({"safe_regex": {"regex": "spiffe://.*/sa/sleep"}})),
    (src(principals=["*"]), authn({"safe_regex": {"regex": ".+"}})),
    (
        src(notPrincipals=["cluster.local/ns/a/sa/b"]),
        {"not_id": authn({"exact": "spiffe://cluster.local/ns/a/sa/b"})},
    ),
    (src(namespaces=["prod"]), authn({"safe_regex": {"regex": ".*/ns/prod/.*"}})),
    (src(namespaces=["team-*"]), authn({"safe_regex": {"regex": ".*/ns/team\\-.*/.*"}})),
    (src(notNamespaces=["prod"]), {"not_id": authn({"safe_regex": {"regex": ".*/ns/prod/.*"}})}),
    (src(serviceAccounts=["shop/sleep"]), authn({"suffix": "/ns/shop/sa/sleep"})),
    (src(ipBlocks=["10.1.0.0/16"]), {"direct_remote_ip": {"address_prefix": "10.1.0.0", "prefix_len": 16}}),
    (src(ipBlocks=["10.1.2.3"]), {"direct_remote_ip": {"address_prefix": "10.1.2.3", "prefix_len": 32}}),
    (
        src(notIpBlocks=["::1"]),
        {"not_id": {"direct_remote_ip": {"address_prefix": "::1", "prefix_len": 128}}},
    ),
    (
        src(remoteIpBlocks=["192.168.0.0/24"]),
        {"remote_ip": {"address_prefix": "192.168.0.0", "prefix_len": 24}},
    ),
    (
        when("request.headers[x-token]", ["secret"]),
        {"header": {"name": "x-token", "string_match": {"exact": "secret"}}},
    ),
    (when("request.headers[x-token]", ["*"]), {"header": {"name": "x-token", "present_match": True}}),
    (when("source.ip", ["10.0.0.1"]), {"direct_remote_ip": {"address_prefix": "10.0.0.1", "prefix_len": 32}}),
    (when("remote.ip", ["10.0.0.0/8"]), {"remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}),
    (when("source.namespace", ["prod"]), authn({"safe_regex": {"regex": ".*/ns/prod/.*"}})),
    (
        when("source.principal", None, ["cluster.local/ns/a/sa/b"]),
        {"not_id": authn({"exact": "spiffe://cluster.local/ns/a/sa/b"})},
    ),
]

PERMISSION_CASES = [
    (op(methods=["GET"]), {"header": {"name": ":method", "string_match": {"exact": "GET"}}}),
    (
        op(notMethods=["DELETE"]),
        {"not_rule": {"header": {"name": ":method", "string_match": {"exact": "DELETE"}}}},
    ),
    (op(paths=["/info"]), {"url_path": {"path": {"exact": "/info"}}}),
    (op(paths=["/api/*"]), {"url_path": {"path": {"prefix": "/api/"}}}),
    (op(paths=["*.png"]), {"url_path": {"path": {"suffix": ".png"}}}),
    (op(paths=["*"]), {"url_path": {"path": {"safe_regex": {"regex": ".+"}}}}),
    (op(ports=["8080"]), {"destination_port": 8080}),
    (
        op(hosts=["Shop.Example.com"]),
        {
            "header": {
                "name": ":authority",
                "string_match": {"exact": "Shop.Example.com", "ignore_case": True},
            }
        },
    ),
    (
        op(hosts=["*.example.com"]),
        {"header": {"name": ":authority", "string_match": {"suffix": ".example.com", "ignore_case": True}}},
    ),
    (op(hosts=["*"]), {"header": {"name": ":authority", "present_match": True}}),
    (when("destination.port", ["9090"]), {"destination_port": 9090}),
    (
        when("destination.ip", ["10.0.0.0/8"]),
        {"destination_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
    ),
    (when("connection.sni", ["*.example.com"]), {"requested_server_name": {"suffix": ".example.com"}}),
]


@pytest.mark.parametrize(("rule", "expected"), PRINCIPAL_CASES)
def test_source_fields_become_principals(rule: dict[str, Any], expected: dict[str, Any]) -> None:
    assert only_policy(rule) == {"permissions": [ANY], "principals": [expected]}


@pytest.mark.parametrize(("rule", "expected"), PERMISSION_CASES)
def test_operation_fields_become_permissions(rule: dict[str, Any], expected: dict[str, Any]) -> None:
    assert only_policy(rule) == {"permissions": [expected], "principals": [ANY]}


def test_values_or_fields_and_entries_or() -> None:
    translated = only_policy(
        {
            "from": [
                {"source": {"principals": ["cluster.local/ns/a/sa/x", "cluster.local/ns/a/sa/y"]}},
                {"source": {"namespaces": ["b"], "notIpBlocks": ["10.0.0.0/8"]}},
            ],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/x"]}}],
            "when": [{"key": "destination.port", "values": ["80"]}],
        }
    )
    x, y = (authn({"exact": f"spiffe://cluster.local/ns/a/sa/{sa}"}) for sa in ("x", "y"))
    assert translated["principals"] == [
        {"or_ids": {"ids": [x, y]}},
        {
            "and_ids": {
                "ids": [
                    authn({"safe_regex": {"regex": ".*/ns/b/.*"}}),
                    {"not_id": {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}},
                ]
            }
        },
    ]
    assert translated["permissions"] == [
        {
            "and_rules": {
                "rules": [
                    {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                    {"url_path": {"path": {"exact": "/x"}}},
                    {"destination_port": 80},
                ]
            }
        }
    ]


def test_each_rule_is_one_named_envoy_policy_and_an_empty_rule_matches_everything() -> None:
    p = policy({"action": "ALLOW", "rules": [{}, op(methods=["GET"])]}, name="two")
    (allow,) = inbound_http_filters("shop", LABELS, [p])
    policies = allow["typed_config"]["rules"]["policies"]
    assert list(policies) == ["ns[shop]-policy[two]-rule[0]", "ns[shop]-policy[two]-rule[1]"]
    assert policies["ns[shop]-policy[two]-rule[0]"] == {"permissions": [ANY], "principals": [ANY]}


def test_cluster_local_principals_also_match_the_mesh_trust_domain() -> None:
    translated = only_policy(src(principals=["cluster.local/ns/a/sa/b"]), trust_domain="corp.example")
    assert translated["principals"] == [
        {
            "or_ids": {
                "ids": [
                    authn({"exact": "spiffe://cluster.local/ns/a/sa/b"}),
                    authn({"exact": "spiffe://corp.example/ns/a/sa/b"}),
                ]
            }
        }
    ]


# --- layers and order ------------------------------------------------------------------


def actions(filters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["name"], f["typed_config"]["rules"]["action"]) for f in filters]


def test_audit_then_deny_then_allow() -> None:
    policies = [
        policy({"action": "ALLOW", "rules": [{}]}, name="a"),
        policy({"action": "DENY", "rules": [op(paths=["/admin"])]}, name="d"),
        policy({"action": "AUDIT", "rules": [{}]}, name="l"),
    ]
    assert actions(inbound_http_filters("shop", LABELS, policies)) == [
        (FILTER_NAMES["AUDIT"], "LOG"),
        (FILTER_NAMES["DENY"], "DENY"),
        (FILTER_NAMES["ALLOW"], "ALLOW"),
    ]


def test_allow_nothing_is_an_allow_filter_without_policies() -> None:
    filters = inbound_http_filters("shop", LABELS, [policy({}, name="allow-nothing")])
    assert filters == [
        {
            "name": FILTER_NAMES["ALLOW"],
            "typed_config": {"@type": RBAC_TYPE, "rules": {"action": "ALLOW", "policies": {}}},
        }
    ]
    message = rbac_pb2.RBAC()
    http_filter_messages(filters)[0].typed_config.Unpack(message)
    assert message.HasField("rules") and not message.rules.policies  # Envoy: ALLOW nothing = deny all


def test_allow_nothing_next_to_another_allow_keeps_only_the_other() -> None:
    filters = inbound_http_filters(
        "shop", LABELS, [policy({}, name="nothing"), policy({"rules": [op(methods=["GET"])]}, name="get")]
    )
    assert list(filters[0]["typed_config"]["rules"]["policies"]) == ["ns[shop]-policy[get]-rule[0]"]


def test_no_policy_no_filter_and_deny_without_rules_denies_nothing() -> None:
    assert inbound_http_filters("shop", LABELS, []) == []
    (deny,) = inbound_http_filters("shop", LABELS, [policy({"action": "DENY"})])
    assert deny["typed_config"]["rules"] == {"action": "DENY", "policies": {}}


def test_custom_is_enforced_as_deny_and_reported() -> None:
    custom = policy(
        {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [op(paths=["/x"])]}, name="ext"
    )
    assert actions(inbound_http_filters("shop", LABELS, [custom])) == [(FILTER_NAMES["DENY"], "DENY")]
    (warning,) = authorization_warnings("shop", LABELS, [custom])
    assert "shop/ext" in warning and "CUSTOM" in warning and "DENY" in warning


# --- selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "selector", "workload_ns", "root", "selected"),
    [
        ("shop", None, "shop", "istio-system", True),  # namespace-wide
        ("shop", None, "other", "istio-system", False),
        ("shop", {"app": "backend"}, "shop", "istio-system", True),
        ("shop", {"app": "backend", "version": "v2"}, "shop", "istio-system", False),
        ("shop", {}, "shop", "istio-system", True),  # empty matchLabels = all
        ("istio-system", None, "anywhere", "istio-system", True),  # mesh-wide
        ("istio-system", {"app": "backend"}, "anywhere", "istio-system", True),
        ("istio-system", {"app": "frontend"}, "anywhere", "istio-system", False),
        ("mesh-root", None, "anywhere", "mesh-root", True),  # the root namespace is a parameter
        ("istio-system", None, "anywhere", "mesh-root", False),
    ],
)
def test_selection(
    namespace: str, selector: dict[str, str] | None, workload_ns: str, root: str, selected: bool
) -> None:
    spec: dict[str, Any] = {} if selector is None else {"selector": {"matchLabels": selector}}
    p = policy(spec, namespace=namespace)
    assert selects(p, workload_ns, LABELS, root) is selected
    assert bool(inbound_http_filters(workload_ns, LABELS, [p], root_namespace=root)) is selected


def test_target_ref_policies_do_not_select_sidecars() -> None:
    p = policy({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]})
    assert not selects(p, "shop", LABELS)


def test_applicable_policies_are_sorted_and_layered() -> None:
    found = applicable_policies(
        "shop",
        LABELS,
        [policy({}, name="b"), policy({}, name="a", namespace="istio-system"), policy({"action": "AUDIT"})],
    )
    assert [(p.namespace, p.name) for p in found["ALLOW"]] == [("istio-system", "a"), ("shop", "b")]
    assert len(found["AUDIT"]) == 1 and found["DENY"] == []


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (when("request.auth.claims[iss]", ["x"]), "request.auth.claims[iss]"),
        (when("experimental.envoy.filters.x", ["x"]), "not supported"),
        (when("source.ip"), "needs values"),
        (src(requestPrincipals=["issuer/subject"]), "requestPrincipals"),
        (op(ports=["http"]), "not a port"),
        (src(ipBlocks=["10.0.0.300"]), "not an IP"),
        (op(paths=["/api/{*}/x"]), "path templates"),
        (src(serviceAccounts=["sleep"]), "<namespace>/<service-account>"),
    ],
)
def test_untranslatable_rules_raise_a_clear_error(rule: dict[str, Any], fragment: str) -> None:
    p = policy({"action": "ALLOW", "rules": [{}, rule]}, name="bad")
    with pytest.raises(AuthorizationPolicyError) as caught:
        inbound_http_filters("shop", LABELS, [p])
    message = str(caught.value)
    assert message.startswith("AuthorizationPolicy shop/bad: spec.rules[1]: ") and fragment in message
    assert policy_problems(p) == [message]


def test_unsupported_when_lists_the_supported_keys() -> None:
    assert (
        "request.headers[NAME]"
        in policy_problems(policy({"rules": [when("request.auth.presenter", ["x"])]}))[0]
    )


# --- per-route variant -------------------------------------------------------------------------


def test_route_scoped_filters_are_constant_and_fail_closed() -> None:
    filters = route_scoped_http_filters()
    assert [f["name"] for f in filters] == [FILTER_NAMES[k] for k in ("AUDIT", "DENY", "ALLOW")]
    messages = http_filter_messages(filters)
    allow = rbac_pb2.RBAC()
    messages[2].typed_config.Unpack(allow)
    assert (
        allow.HasField("rules")
        and allow.rules.action == rbac_pb2.RBAC().rules.ALLOW
        and not allow.rules.policies
    )
    for message in messages[:2]:
        unpacked = rbac_pb2.RBAC()
        message.typed_config.Unpack(unpacked)
        assert not unpacked.HasField("rules")  # no-op until a route overrides it


def test_route_override_carries_each_layer_or_disables_it() -> None:
    deny = policy({"action": "DENY", "rules": [src(principals=["cluster.local/ns/shop/sa/intruder"])]})
    override = route_rbac_override("shop", LABELS, [deny])
    assert set(override) == set(FILTER_NAMES.values())
    assert override[FILTER_NAMES["ALLOW"]] == {"@type": RBAC_PER_ROUTE_TYPE}  # disabled: no ALLOW policy
    assert override[FILTER_NAMES["AUDIT"]] == {"@type": RBAC_PER_ROUTE_TYPE}
    listener_level = inbound_http_filters("shop", LABELS, [deny])[0]["typed_config"]
    assert override[FILTER_NAMES["DENY"]]["rbac"] == {k: v for k, v in listener_level.items() if k != "@type"}
    for entry in override.values():
        body = {k: v for k, v in entry.items() if k != "@type"}
        json_format.ParseDict(body, rbac_pb2.RBACPerRoute())
    assert route_rbac_override("shop", LABELS, [policy({})])[FILTER_NAMES["ALLOW"]]["rbac"] == {
        "rules": {"action": "ALLOW", "policies": {}}
    }


# --- property: every generated policy parses into Envoy's RBAC ----------------------------------

_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
_pattern = st.one_of(_word, _word.map(lambda w: w + "*"), _word.map(lambda w: "*" + w), st.just("*"))
_principal = st.builds(lambda ns, sa: f"cluster.local/ns/{ns}/sa/{sa}", _word, _pattern)
_cidr = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.ip_addresses(v=6).map(str),
)
_port = st.integers(1, 65535).map(str)
_path = st.one_of(_pattern.map(lambda p: "/" + p if p != "*" else p))
_method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "*"])
_host = st.one_of(_word.map(lambda w: w + ".example.com"), st.just("*"), _word.map(lambda w: "*." + w))
_vals = lambda s: st.lists(s, max_size=3)  # noqa: E731

_source = st.fixed_dictionaries(
    {},
    optional={
        "principals": _vals(_principal),
        "notPrincipals": _vals(_principal),
        "namespaces": _vals(_pattern),
        "notNamespaces": _vals(_pattern),
        "ipBlocks": _vals(_cidr),
        "notIpBlocks": _vals(_cidr),
        "remoteIpBlocks": _vals(_cidr),
        "serviceAccounts": _vals(st.builds(lambda a, b: f"{a}/{b}", _word, _word)),
    },
)
_operation = st.fixed_dictionaries(
    {},
    optional={
        "hosts": _vals(_host),
        "notHosts": _vals(_host),
        "methods": _vals(_method),
        "notMethods": _vals(_method),
        "paths": _vals(_path),
        "notPaths": _vals(_path),
        "ports": _vals(_port),
        "notPorts": _vals(_port),
    },
)
_condition = st.one_of(
    st.fixed_dictionaries(
        {"key": _word.map(lambda w: f"request.headers[x-{w}]"), "values": st.lists(_pattern, min_size=1)}
    ),
    st.fixed_dictionaries({"key": st.just("source.ip"), "notValues": st.lists(_cidr, min_size=1)}),
    st.fixed_dictionaries({"key": st.just("source.namespace"), "values": st.lists(_pattern, min_size=1)}),
    st.fixed_dictionaries({"key": st.just("source.principal"), "values": st.lists(_principal, min_size=1)}),
    st.fixed_dictionaries({"key": st.just("destination.port"), "values": st.lists(_port, min_size=1)}),
)
_rule = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(st.fixed_dictionaries({"source": _source}), max_size=2),
        "to": st.lists(st.fixed_dictionaries({"operation": _operation}), max_size=2),
        "when": st.lists(_condition, max_size=2),
    },
)
_spec = st.fixed_dictionaries(
    {"action": st.sampled_from(["ALLOW", "DENY", "AUDIT"]), "rules": st.lists(_rule, max_size=3)}
)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(_spec, min_size=1, max_size=3))
def test_any_generated_policy_parses_into_envoy_rbac(specs: list[dict[str, Any]]) -> None:
    policies = [policy(spec, name=f"p{i}") for i, spec in enumerate(specs)]
    filters = inbound_http_filters("shop", LABELS, policies)
    for message in http_filter_messages(filters):
        rbac = rbac_pb2.RBAC()
        assert message.typed_config.Unpack(rbac)
    rules = sum(len(f["typed_config"]["rules"]["policies"]) for f in filters)
    assert rules == sum(len(spec["rules"]) for spec in specs)
    for entry in route_rbac_override("shop", LABELS, policies).values():
        json_format.ParseDict({k: v for k, v in entry.items() if k != "@type"}, rbac_pb2.RBACPerRoute())
