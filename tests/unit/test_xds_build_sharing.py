"""Shared builds and the fast build path give exactly what a per-node, unindexed build gives:
the pusher's per-push build sharing (:func:`meshloop.xds.pusher.build_key`), the indexed
push context (:mod:`meshloop.xds.push_index`) and the fast proto3-JSON parser
(:mod:`meshloop.xds.proto_json`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from meshloop.mesh import MeshConfig, load_and_validate
from meshloop.xds import cds, eds, lds, rds
from meshloop.xds.cache import NodeInfo, SnapshotCache
from meshloop.xds.generate import BOOTSTRAP_CLUSTERS, MeshPusher, build_resources, build_snapshot
from meshloop.xds.overrides import Overrides, RouteWeights
from meshloop.xds.proto_json import parse_dict
from meshloop.xds.protos import parse
from meshloop.xds.proxy import Proxy, proxy_from_node
from meshloop.xds.push import Hooks, PushContext
from meshloop.xds.push_index import IndexedPushContext, indexed
from meshloop.xds.pusher import build_key
from meshloop.xds.resources import CLUSTER
from meshloop.xds.security_hooks import security_hooks
from meshloop.xds.snapshot import Snapshot

BOOKINFO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"
NS = "bookinfo"
REVIEWS = "reviews.bookinfo.svc.cluster.local"


@pytest.fixture(scope="module")
def bookinfo() -> MeshConfig:
    config, issues = load_and_validate([BOOKINFO])
    assert config is not None, issues
    return config


def node(app: str, ip: str, pod: str, sds: bool = False, role: str = "sidecar") -> NodeInfo:
    kind = "router" if role == "gateway" else "sidecar"
    meta: dict[str, Any] = {"LABELS": {"app": app, "version": "v1"} if role == "sidecar" else {"istio": app}}
    if sds:
        meta["MESHLOOP_SDS"] = "true"
    return NodeInfo(f"{kind}~{ip}~{pod}.{NS}~{NS}.svc.cluster.local", metadata=meta)


#: replicas of one workload off the registry's IPs (one build), the same workload at an
#: endpoint's IP (its own build: inbound listeners), with and without SDS, and a gateway
NODES = [
    *(node("productpage", f"10.1.0.{i}", f"productpage-v1-{i}") for i in range(1, 6)),
    *(node("productpage", f"10.2.0.{i}", f"productpage-v1-s{i}", sds=True) for i in range(1, 4)),
    node("productpage", "127.0.0.1", "productpage-v1-local"),
    node("reviews", "127.0.0.1", "reviews-v1-local", sds=True),
    node("ingressgateway", "10.3.0.1", "gw-1", role="gateway"),
    node("ingressgateway", "10.3.0.2", "gw-2", role="gateway"),
]


def contents(snapshot: Snapshot) -> dict[str, dict[str, tuple[str, bytes]]]:
    """Every resource's version and bytes, by type and name."""
    return {
        url: {name: (r.version, r.packed.value) for name, r in typed.by_name.items()}
        for url, typed in snapshot.types.items()
    }


async def pushed(config: MeshConfig, overrides: Overrides, hooks: Hooks) -> tuple[SnapshotCache, MeshPusher]:
    cache = SnapshotCache(BOOTSTRAP_CLUSTERS)
    pusher = MeshPusher(cache, hooks=hooks)
    pusher.update_config(config)
    pusher.push_all()
    for n in NODES:
        assert cache.snapshot_for(n) is not None  # records the node, schedules its build
    await asyncio.sleep(0)
    pusher.set_overrides(overrides)
    pusher.push_all()
    return cache, pusher


@pytest.mark.parametrize("with_hooks", [False, True])
async def test_shared_builds_are_byte_identical_to_per_node_builds(
    bookinfo: MeshConfig, with_hooks: bool
) -> None:
    hooks = security_hooks() if with_hooks else Hooks()
    overrides = Overrides().with_weights(RouteWeights.of(REVIEWS, {"v1": 20, "v2": 80}))
    cache, pusher = await pushed(bookinfo, overrides, hooks)
    for n in NODES:
        shared = cache.snapshot(n.id)
        assert shared is not None, pusher.status()["nodes"][n.id]
        alone = build_snapshot(proxy_from_node(n), PushContext(bookinfo, overrides, hooks))
        assert shared.versions() == alone.versions()
        assert contents(shared) == contents(alone)


async def test_identical_proxies_share_one_snapshot_object(
    bookinfo: MeshConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshloop.xds.pusher as pusher_module

    built: list[str] = []

    def counting(proxy: Proxy, push: Any) -> Snapshot:
        built.append(proxy.id)
        return build_snapshot(proxy, push)

    monkeypatch.setattr(pusher_module, "build_snapshot", counting)
    cache, pusher = await pushed(bookinfo, Overrides(), security_hooks())
    built.clear()
    pusher.push_all()
    # 2 defaults + replicas off-registry (2 groups: SDS or not) + 2 at an endpoint IP + 1 gateway group
    assert len(built) == 7
    replicas = [cache.snapshot(n.id) for n in NODES[:5]]
    assert all(s is replicas[0] for s in replicas)
    assert cache.snapshot(NODES[5].id) is not replicas[0]  # SDS: mTLS config differs
    assert cache.snapshot(NODES[-1].id) is cache.snapshot(NODES[-2].id)
    local = cache.snapshot(NODES[8].id)
    assert (
        local is not None
        and local is not replicas[0]
        and any(c.startswith("inbound|") for c in local.names(CLUSTER))
    )


def test_build_key_drops_only_what_translation_does_not_read(bookinfo: MeshConfig) -> None:
    push = IndexedPushContext(bookinfo)
    off = proxy_from_node(NODES[0])
    on = proxy_from_node(NODES[8])
    assert build_key(off, push) == build_key(proxy_from_node(NODES[1]), push)
    assert build_key(off, push).ip == "" and build_key(on, push).ip == "127.0.0.1"
    assert build_key(off, push) != build_key(proxy_from_node(NODES[5]), push)  # sds differs


async def test_a_failed_build_fails_every_node_of_its_key(bookinfo: MeshConfig) -> None:
    cache, pusher = await pushed(bookinfo, Overrides(), Hooks())
    good = cache.snapshot(NODES[0].id)
    broken = MeshConfig.build([(r, None) for r in bookinfo.resources if r.kind != "DestinationRule"])
    pusher.update_config(broken)
    pusher.push_all()
    nodes = pusher.status()["nodes"]
    assert cache.snapshot(NODES[0].id) is good
    assert all("not in CDS" in nodes[n.id]["error"] for n in NODES[:5])


# --- indexed push context ---------------------------------------------------------------------

RULES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all-local, namespace: shop}
spec: {host: "*.shop.svc.cluster.local", subsets: [{name: a, labels: {v: a}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: istio-system}
spec: {host: "*", subsets: [{name: z, labels: {v: z}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec: {host: cart, subsets: [{name: v1, labels: {v: "1"}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-from-web, namespace: web}
spec: {host: cart.shop.svc.cluster.local, subsets: [{name: w, labels: {v: w}}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pay, namespace: shop}
spec: {selector: {app: pay}, ports: [{name: http, port: 80}]}
"""


def test_indexed_lookups_answer_as_the_plain_push_context(bookinfo: MeshConfig, tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(RULES)
    shop, issues = load_and_validate([tmp_path])
    assert shop is not None, issues
    hosts = ["cart.shop.svc.cluster.local", "pay.shop.svc.cluster.local", "x.example.com", REVIEWS, ""]
    for config in (shop, bookinfo):
        plain, fast = PushContext(config), IndexedPushContext(config)
        for host in [*hosts, *config.registry.services]:
            for ns in ("shop", "web", "istio-system", NS, "other"):
                assert fast.destination_rule(host, ns) is plain.destination_rule(host, ns)
                assert fast.subsets(host, ns) == plain.subsets(host, ns)
                assert fast.destination_rule(host, ns) is plain.destination_rule(host, ns)  # memo
    assert indexed(plain) is not plain and indexed(fast) is fast


# --- proto3 JSON ------------------------------------------------------------------------------


def all_dicts(
    config: MeshConfig, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[dict[str, Any], type[Message]]]:
    """Every (proto3 JSON, message class) the generators parse for the bookinfo proxies."""
    seen: list[tuple[dict[str, Any], type[Message]]] = []

    def spy(data: dict[str, Any], cls: type[Message]) -> Message:
        seen.append((data, cls))
        return parse(data, cls)

    for module in (cds, eds, lds, rds):
        monkeypatch.setattr(module, "parse", spy)
    push = PushContext(config, Overrides(), security_hooks())
    for n in NODES:
        build_resources(proxy_from_node(n), push)
    return seen


def test_parse_dict_equals_json_format_on_every_generated_resource(
    bookinfo: MeshConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = all_dicts(bookinfo, monkeypatch)
    assert len(seen) > 100
    for data, cls in seen:
        expected, got = json_format.ParseDict(data, cls()), parse_dict(data, cls)
        assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
        assert got.SerializeToString() == expected.SerializeToString()


CASES: list[tuple[str, dict[str, Any]]] = [
    ("camelCase names", {"name": "c", "connectTimeout": "1s"}),
    ("null", {"name": "c", "connect_timeout": None}),
    ("int64 as string", {"name": "c", "ring_hash_lb_config": {"minimum_ring_size": "1024"}}),
    ("enum name", {"name": "c", "type": "STRICT_DNS", "lb_policy": "RING_HASH"}),
    ("enum number", {"name": "c", "lb_policy": 2}),
    ("non-ASCII", {"name": "ç"}),
    ("wrapper", {"name": "c", "per_connection_buffer_limit_bytes": 7}),
    ("struct", {"name": "c", "metadata": {"filter_metadata": {"x": {"a": [1, "b", None]}}}}),
    (
        "any",
        {
            "name": "c",
            "typed_extension_protocol_options": {
                "k": {"@type": "type.googleapis.com/google.protobuf.UInt32Value", "value": 3}
            },
        },
    ),
    ("empty any", {"name": "c", "typed_extension_protocol_options": {"k": {}}}),
    ("float field", {"name": "c", "common_lb_config": {"healthy_panic_threshold": {"value": 30}}}),
]


@pytest.mark.parametrize("data", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_dict_falls_back_to_json_format_exactly(data: dict[str, Any]) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    expected = json_format.ParseDict(data, cluster_pb2.Cluster())
    assert parse_dict(data, cluster_pb2.Cluster).SerializeToString() == expected.SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        {"name": "c", "no_such_field": 1},
        {"name": "c", "type": "EDS", "cluster_type": {"name": "x"}},  # two fields of one oneof
        {"name": 5},
        {"name": "c", "lb_policy": "NOPE"},
        {"name": "c", "typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/nope.Nope"}}},
    ],
)
def test_parse_dict_raises_json_formats_errors(data: dict[str, Any]) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    with pytest.raises(json_format.ParseError) as expected:
        json_format.ParseDict(data, cluster_pb2.Cluster())
    with pytest.raises(json_format.ParseError) as got:
        parse_dict(data, cluster_pb2.Cluster)
    assert str(got.value) == str(expected.value)
