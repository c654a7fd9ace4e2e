"""The loader: file:line of documents and fields, errors, recursion, determinism."""
# ruff: noqa: E501  (expected issue messages are kept whole, one string per line)

from __future__ import annotations

from pathlib import Path

import pytest

from meshloop.mesh.loader import PathNotFound, collect_files, load

MULTI = """\
# leading comment
apiVersion: v1
kind: Service
metadata:
  name: b
spec:
  ports:
  - name: http
    port: 80
---
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: a
  namespace: shop
spec:
  hosts: [b.default.svc.cluster.local]
  http:
  - route:
    - destination:
        host: b.default.svc.cluster.local
      weight: 100
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_line_numbers_in_a_multi_document_file(tmp_path: Path) -> None:
    f = write(tmp_path / "mesh.yaml", MULTI)
    config, issues = load([f])
    assert issues == []
    (svc,) = config.services
    (vs,) = config.virtual_services
    assert config.source_of(svc) == (str(f), 2)
    assert config.source_of(vs) == (str(f), 12)
    assert config.source_of(svc, "spec.ports[0].port") == (str(f), 9)
    assert config.source_of(vs, "metadata.namespace") == (str(f), 16)
    assert config.source_of(vs, "spec.http[0]") == (str(f), 20)
    assert config.source_of(vs, ("spec", "http", 0, "route", 0, "weight")) == (str(f), 23)
    # absent field -> nearest present ancestor
    assert config.source_of(vs, "spec.http[0].timeout") == (str(f), 20)
    assert vs.namespace == "shop" and svc.namespace == "default"


def test_unknown_kind_is_an_error_at_its_line(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n")
    config, issues = load([f])
    assert config.resources == ()
    assert [i.render() for i in issues] == [
        f'{f}:2: Sidecar/default/s: kind: unknown kind "Sidecar"; meshloop reads VirtualService, '
        "DestinationRule, ServiceEntry, Gateway, WorkloadEntry, PeerAuthentication, AuthorizationPolicy, "
        "Service, EndpointSlice"
    ]


def test_unsupported_api_version(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "kind: Gateway\napiVersion: networking.istio.io/v9\nmetadata: {name: g}\n")
    _, issues = load([f])
    assert [i.render() for i in issues] == [
        f'{f}:2: Gateway/default/g: apiVersion: apiVersion "networking.istio.io/v9" is not supported for '
        "Gateway; use networking.istio.io/v1"
    ]


def test_yaml_syntax_error_is_one_issue_at_the_parsers_line(tmp_path: Path) -> None:
    good = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n"
    f = write(tmp_path / "x.yaml", good + "a: [1, 2\nb: 3\n")
    config, issues = load([f])
    assert config.resources == ()  # the whole file is refused
    assert len(issues) == 1
    assert issues[0].render().startswith(f"{f}:6: YAML syntax error: ")


def test_document_must_be_a_mapping_and_name_required(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "- a\n- b\n---\napiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n")
    _, issues = load([f])
    assert [i.render() for i in issues] == [
        f"{f}:1: a document must be a mapping",
        f"{f}:6: Service/default/: metadata.name: required field is missing",
    ]


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {}\nspec: {}\n")
    _, issues = load([f])
    assert [i.render() for i in issues] == [
        f"{f}:5: Service/default/s: spec: duplicate key (YAML would keep only the last)"
    ]


def test_empty_documents_and_comment_only_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "empty.yaml", "")
    write(tmp_path / "comments.yml", "# nothing\n---\n# still nothing\n---\n")
    config, issues = load([tmp_path])
    assert config.resources == () and issues == []


def test_directory_recursion_only_yaml_files(tmp_path: Path) -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {{name: {}}}\n"
    write(tmp_path / "a" / "b" / "deep.yml", svc.format("deep"))
    write(tmp_path / "top.yaml", svc.format("top"))
    write(tmp_path / "README.md", "not yaml: [")
    write(tmp_path / "notes.txt", "kind: Nope")
    config, issues = load([tmp_path])
    assert issues == []
    assert [s.name for s in config.services] == ["deep", "top"]
    assert collect_files([tmp_path, tmp_path / "top.yaml"]) == [
        tmp_path / "a/b/deep.yml",
        tmp_path / "top.yaml",
    ]


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(PathNotFound):
        load([tmp_path / "nope"])


def test_order_is_deterministic_and_independent_of_files(tmp_path: Path) -> None:
    docs = [
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: {ns}}}\n"
        for n, ns in [("z", "a"), ("a", "b"), ("m", "a")]
    ]
    write(tmp_path / "one" / "all.yaml", "---\n".join(docs))
    for i, d in enumerate(reversed(docs)):
        write(tmp_path / "many" / f"{i}.yaml", d)
    one, _ = load([tmp_path / "one"])
    many, _ = load([tmp_path / "many"])
    names = [(s.namespace, s.name) for s in one.services]
    assert names == [("a", "m"), ("a", "z"), ("b", "a")]
    assert names == [(s.namespace, s.name) for s in many.services]
    assert one.version == many.version == load([tmp_path / "one"])[0].version


def test_version_changes_with_content(tmp_path: Path) -> None:
    f = write(tmp_path / "s.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    before = load([f])[0].version
    write(f, "apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: {a: b}}\n")
    assert load([f])[0].version != before


def test_schema_errors_carry_field_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n"
        "  host: h\n  trafficPolicy:\n    outlierDetection:\n      interval: 0s\n      maxEjectionPercent: 101\n"
        "    connectionPool:\n      tcp: {maxConnections: nope}\n",
    )
    _, issues = load([f])
    assert [i.render() for i in issues] == [
        f'{f}:8: DestinationRule/default/d: spec.trafficPolicy.outlierDetection.interval: duration "0s" must be '
        "at least 1ms",
        f"{f}:9: DestinationRule/default/d: spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be <= 100, "
        "got 101",
        f"{f}:11: DestinationRule/default/d: spec.trafficPolicy.connectionPool.tcp.maxConnections: expected an "
        'integer, got "nope"',
    ]
