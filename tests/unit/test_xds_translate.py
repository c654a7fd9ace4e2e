"""Translation of the mesh model into Envoy resources (pure): bookinfo, policies, routes,
gateways, overrides, the pusher's bookkeeping, and properties (weights, consistency)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshloop.mesh import MeshConfig, load_and_validate, validate
from meshloop.xds.cache import NodeInfo, SnapshotCache
from meshloop.xds.dump import add_config_command, config_dump
from meshloop.xds.generate import MeshPusher, build_snapshot
from meshloop.xds.overrides import CircuitBreaker, OutlierOverride, OverrideError, Overrides, RouteWeights
from meshloop.xds.protos import dump
from meshloop.xds.proxy import Proxy, parse_node_id, proxy_from_node, service_instances
from meshloop.xds.push import DownstreamTls, Hooks, PushContext, TranslationError
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

BOOKINFO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"
NS = "bookinfo"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
REVIEWS = "reviews.bookinfo.svc.cluster.local"
RATINGS = "ratings.bookinfo.svc.cluster.local"


def sidecar(app: str, version: str = "v1") -> Proxy:
    return Proxy(
        "sidecar",
        f"sidecar~127.0.0.1~{app}-{version}.{NS}~{NS}.svc.cluster.local",
        NS,
        {"app": app, "version": version},
    )


GATEWAY = Proxy(
    "gateway", f"router~127.0.0.1~gw.{NS}~{NS}.svc.cluster.local", NS, {"istio": "ingressgateway"}
)
BOOKINFO_PROXIES = [
    sidecar("productpage"),
    sidecar("reviews", "v1"),
    sidecar("reviews", "v2"),
    sidecar("reviews", "v3"),
    sidecar("ratings"),
    sidecar("details"),
    GATEWAY,
]


@pytest.fixture(scope="module")
def bookinfo() -> MeshConfig:
    config, issues = load_and_validate([BOOKINFO])
    assert config is not None, issues
    return config


def resources(
    proxy: Proxy, config: MeshConfig | PushContext, **kw: Any
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"CDS"|"EDS"|"LDS"|"RDS": {name: proto3 JSON}}."""
    snap = build_snapshot(proxy, config, **kw)
    names = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}
    return {
        short: {n: dump(r.message) for n, r in snap.get(url).by_name.items()} for url, short in names.items()
    }


def vhost(rds: dict[str, Any], config: str, name: str) -> dict[str, Any]:
    return next(v for v in rds[config]["virtual_hosts"] if v["name"] == name)


def mesh(tmp_path: Path, text: str) -> MeshConfig:
    (tmp_path / "mesh.yaml").write_text(text)
    config, issues = load_and_validate([BOOKINFO, tmp_path / "mesh.yaml"])
    assert config is not None, [i.render() for i in issues]
    return config


# --- proxies ----------------------------------------------------------------------------------


def test_proxy_from_istio_node_id_and_metadata() -> None:
    node = NodeInfo(
        "sidecar~10.0.0.7~reviews-v2-abc.shop~shop.svc.cluster.local",
        metadata={"NAMESPACE": "shop", "LABELS": {"app": "reviews"}, "MESHLOOP_OUTBOUND_PORT_OFFSET": "100"},
    )
    proxy = proxy_from_node(node)
    assert (proxy.role, proxy.ip, proxy.namespace, proxy.labels, proxy.outbound_port_offset) == (
        "sidecar", "10.0.0.7", "shop", {"app": "reviews"}, 100,
    )  # fmt: skip
    guessed = proxy_from_node(NodeInfo("router~1.2.3.4~reviews-v2-abc.shop~shop.svc.cluster.local"))
    assert guessed.role == "gateway" and guessed.labels == {"app": "reviews", "version": "v2"}
    assert guessed.outbound_bind == "0.0.0.0"
    assert proxy_from_node(NodeInfo(node.id, metadata={"MESHLOOP_ROLE": "gateway"})).role == "gateway"
    with pytest.raises(ValueError, match="not Istio's"):
        parse_node_id("nonsense")


def test_own_services_by_ip_and_labels(bookinfo: MeshConfig) -> None:
    instances = service_instances(sidecar("reviews", "v2"), bookinfo.registry)
    assert [(i.service.host, i.endpoint.port) for i in instances] == [(REVIEWS, 9085)]
    assert service_instances(GATEWAY, bookinfo.registry) == []


# --- bookinfo ---------------------------------------------------------------------------------


@pytest.mark.parametrize("proxy", BOOKINFO_PROXIES, ids=lambda p: p.id.split("~")[2])
def test_every_bookinfo_proxy_gets_a_consistent_snapshot(bookinfo: MeshConfig, proxy: Proxy) -> None:
    snap = build_snapshot(proxy, bookinfo)
    assert snap.consistent({"meshloop_collector"}) == []
    assert all(snap.names(url) for url in (CLUSTER, ENDPOINT, LISTENER, ROUTE))


def test_cluster_names_are_istio_style(bookinfo: MeshConfig) -> None:
    cds = resources(sidecar("productpage"), bookinfo)["CDS"]
    assert {f"outbound|9080|{s}|{REVIEWS}" for s in ("", "v1", "v2", "v3")} <= set(cds)
    assert "inbound|9081||" in cds
    assert cds["inbound|9081||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"
    ] == {"socket_address": {"address": "127.0.0.1", "port_value": 9081}}
    eds = resources(sidecar("productpage"), bookinfo)["EDS"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in eds[f"outbound|9080|v2|{REVIEWS}"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [9085]
    assert len(eds[f"outbound|9080||{REVIEWS}"]["endpoints"][0]["lb_endpoints"]) == 3


def test_destination_rule_policies(bookinfo: MeshConfig) -> None:
    cds = resources(sidecar("productpage"), bookinfo)["CDS"]
    v1 = cds[f"outbound|9080|v1|{REVIEWS}"]
    assert v1["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 100, "max_pending_requests": 50, "max_requests": 200, "max_retries": 3,
    }  # fmt: skip
    assert v1["connect_timeout"] == "0.500s" and v1["lb_policy"] == "LEAST_REQUEST"
    options = v1["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"] == {
        "max_requests_per_connection": 10,
        "idle_timeout": "30s",
    }
    assert v1["outlier_detection"] == {
        "consecutive_5xx": 5, "enforcing_consecutive_5xx": 100, "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100, "interval": "10s", "base_ejection_time": "30s",
        "max_ejection_percent": 50, "enforcing_success_rate": 0,
    }  # fmt: skip
    assert v1["common_lb_config"]["healthy_panic_threshold"]["value"] == 30
    # the v3 subset overrides only the load balancer (Istio merge), keeping the rest
    v3 = cds[f"outbound|9080|v3|{REVIEWS}"]
    assert v3["lb_policy"] == "RING_HASH" and v3["circuit_breakers"] == v1["circuit_breakers"]
    ratings = cds[f"outbound|9080||{RATINGS}"]
    assert ratings["outlier_detection"]["base_ejection_time"] == "60s"
    assert ratings["circuit_breakers"]["thresholds"][0]["max_requests"] == 4294967295  # unset = unlimited
    details = cds["outbound|9080||details.bookinfo.svc.cluster.local"]
    assert details.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"  # proto default: omitted
    assert details["circuit_breakers"]["thresholds"][0]["max_requests"] == 100


def test_istio_mutual_goes_through_the_upstream_tls_hook(bookinfo: MeshConfig) -> None:
    calls: list[tuple[str, int, str | None, str | None]] = []

    def upstream_tls(
        proxy: Proxy, push: PushContext, host: str, port: int, subset: str | None, mode: str | None
    ) -> Any:
        calls.append((host, port, subset, mode))
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS + "UpstreamTlsContext", "sni": host},
        }

    def inbound_tls(proxy: Proxy, push: PushContext, port: int) -> DownstreamTls:
        socket = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS + "DownstreamTlsContext"},
        }
        return DownstreamTls(socket, permissive=True)

    def rbac(proxy: Proxy, push: PushContext, port: int) -> list[dict[str, Any]]:
        return [{"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}]  # fmt: skip

    hooks = Hooks(upstream_tls=upstream_tls, inbound_tls=inbound_tls, inbound_http_filters=rbac)
    res = resources(sidecar("reviews", "v1"), bookinfo, hooks=hooks)
    assert (REVIEWS, 9080, "v2", "ISTIO_MUTUAL") in calls
    assert ("details.bookinfo.svc.cluster.local", 9080, None, None) in calls
    assert res["CDS"][f"outbound|9080|v2|{REVIEWS}"]["transport_socket"]["typed_config"]["sni"] == REVIEWS
    inbound = res["LDS"]["inbound_127.0.0.1_9084"]
    assert [c.get("filter_chain_match", {}).get("transport_protocol") for c in inbound["filter_chains"]] == [
        "tls",
        "raw_buffer",
    ]
    filters = inbound["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.rbac", "envoy.filters.http.router"]


def test_reviews_virtual_service_routes(bookinfo: MeshConfig) -> None:
    rds = resources(sidecar("productpage"), bookinfo)["RDS"]
    host = vhost(rds, "9080", f"{REVIEWS}:9080")
    assert {"reviews", "reviews:9080", REVIEWS, f"{REVIEWS}:9080", "reviews.bookinfo"} <= set(host["domains"])
    jason, canary = host["routes"]
    assert jason["name"] == canary["name"] == "reviews"
    assert jason["match"]["headers"] == [{"name": "end-user", "string_match": {"exact": "jason"}}]
    assert jason["route"]["cluster"] == f"outbound|9080|v3|{REVIEWS}"
    assert jason["route"]["hash_policy"] == [{"header": {"header_name": "end-user"}}]
    weighted = canary["route"]["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in weighted] == [
        (f"outbound|9080|v1|{REVIEWS}", 80),
        (f"outbound|9080|v2|{REVIEWS}", 20),
    ]
    assert weighted[1]["response_headers_to_add"][0]["header"] == {"key": "x-canary", "value": "true"}
    assert canary["route"]["timeout"] == "2s"
    retry = canary["route"]["retry_policy"]
    assert (retry["num_retries"], retry["per_try_timeout"], retry["retry_on"]) == (
        3,
        "0.500s",
        "5xx,reset,connect-failure",
    )
    default = vhost(rds, "9080", "productpage.bookinfo.svc.cluster.local:9080")["routes"]
    assert default[0]["name"] == "default" and default[0]["route"]["cluster"].startswith(
        "outbound|9080||productpage"
    )


def test_fault_injection_and_hcm_fault_filter(bookinfo: MeshConfig) -> None:
    res = resources(sidecar("reviews"), bookinfo)
    delay, abort = vhost(res["RDS"], "9080", f"{RATINGS}:9080")["routes"]
    fault = delay["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {
        "fixed_delay": "7s",
        "percentage": {"numerator": 1000000, "denominator": "MILLION"},
    }
    fault = abort["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"] == {"http_status": 503, "percentage": {"numerator": 1000, "denominator": "MILLION"}}
    hcm = res["LDS"]["127.0.0.1_9080"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert hcm["rds"]["route_config_name"] == "9080"
    log = hcm["access_log"][0]["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]
    assert log == {"cluster_name": "meshloop_collector"}


EXTRA = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-extra, namespace: bookinfo}
spec:
  hosts: [productpage]
  http:
  - name: moved
    match: [{uri: {prefix: /old}, ignoreUriCase: true}]
    redirect: {uri: /new, authority: example.com, redirectCode: 302}
  - name: api
    match:
    - uri: {regex: "/api/v[0-9]+/.*"}
      method: {exact: POST}
      queryParams: {debug: {exact: "1"}}
      withoutHeaders: {x-skip: {prefix: ""}}
    rewrite: {uri: /v2/, authority: api.internal}
    mirror: {host: details}
    mirrorPercentage: {value: 25}
    route: [{destination: {host: productpage}}]
    headers: {request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}}
  - route: [{destination: {host: productpage}}]
"""


def test_redirect_rewrite_mirror_and_matches(tmp_path: Path) -> None:
    config = mesh(tmp_path, EXTRA)
    moved, api, rest = vhost(
        resources(sidecar("reviews"), config)["RDS"], "9080", "productpage.bookinfo.svc.cluster.local:9080"
    )["routes"]
    assert moved["match"] == {"prefix": "/old", "case_sensitive": False}
    assert moved["redirect"] == {
        "path_redirect": "/new",
        "host_redirect": "example.com",
        "response_code": "FOUND",
    }
    assert api["match"]["safe_regex"] == {"regex": "/api/v[0-9]+/.*"}
    assert {"name": ":method", "string_match": {"exact": "POST"}} in api["match"]["headers"]
    assert {"name": "x-skip", "present_match": True, "invert_match": True} in api["match"]["headers"]
    assert api["match"]["query_parameters"] == [{"name": "debug", "string_match": {"exact": "1"}}]
    action = api["route"]
    assert (action["prefix_rewrite"], action["host_rewrite_literal"]) == ("/v2/", "api.internal")
    assert action["request_mirror_policies"] == [{
        "cluster": "outbound|9080||details.bookinfo.svc.cluster.local",
        "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}},
    }]  # fmt: skip
    assert api["request_headers_to_remove"] == ["x-c"] and len(api["request_headers_to_add"]) == 2
    assert rest["match"] == {"prefix": "/"}


def test_gateway_routes_by_host_and_path(bookinfo: MeshConfig) -> None:
    res = resources(GATEWAY, bookinfo)
    assert set(res["LDS"]) == {"0.0.0.0_80"} and set(res["RDS"]) == {"http.80"}
    host = vhost(res["RDS"], "http.80", "bookinfo.example.com:80")
    assert host["domains"] == ["bookinfo.example.com", "bookinfo.example.com:80"]
    matches = [r["match"] for r in host["routes"]]
    assert {"path": "/productpage"} in matches and {"prefix": "/static"} in matches
    assert all(
        r["route"]["cluster"] == "outbound|9080||productpage.bookinfo.svc.cluster.local"
        for r in host["routes"]
    )
    assert host["routes"][0]["request_headers_to_add"][0]["header"] == {
        "key": "x-served-by",
        "value": "meshloop",
    }
    # the bookinfo VirtualService is bound to the gateway only, not to sidecars
    assert "bookinfo.example.com" not in json.dumps(resources(sidecar("productpage"), bookinfo)["RDS"])


# --- overrides --------------------------------------------------------------------------------


def test_overrides_replace_weights_thresholds_and_outliers(bookinfo: MeshConfig) -> None:
    overrides = (
        Overrides()
        .with_weights(RouteWeights.of(REVIEWS, {"v1": 0, "v2": 100}))
        .with_circuit_breaker(CircuitBreaker(REVIEWS, "v2", max_pending_requests=1))
        .with_outlier(OutlierOverride(REVIEWS, consecutive_5xx=2, interval_s=0.5))
    )
    res = resources(sidecar("productpage"), bookinfo, overrides=overrides)
    jason, canary = vhost(res["RDS"], "9080", f"{REVIEWS}:9080")["routes"]
    assert jason["route"]["cluster"].startswith("outbound|9080|v3|")  # a matching route keeps its target
    assert [c["weight"] for c in canary["route"]["weighted_clusters"]["clusters"]] == [0, 100]
    assert canary["route"]["weighted_clusters"]["clusters"][1]["response_headers_to_add"]  # headers kept
    assert (
        res["CDS"][f"outbound|9080|v2|{REVIEWS}"]["circuit_breakers"]["thresholds"][0]["max_pending_requests"]
        == 1
    )
    assert (
        res["CDS"][f"outbound|9080|v1|{REVIEWS}"]["circuit_breakers"]["thresholds"][0]["max_pending_requests"]
        == 50
    )
    assert res["CDS"][f"outbound|9080|v1|{REVIEWS}"]["outlier_detection"]["consecutive_5xx"] == 2
    assert overrides.describe()["route_weights"] == [
        {"host": REVIEWS, "route": None, "weights": {"v1": 0, "v2": 100}}
    ]
    cleared = (
        overrides.without_weights(REVIEWS).without_circuit_breaker(REVIEWS, "v2").without_outlier(REVIEWS)
    )
    assert (
        not cleared
        and build_snapshot(sidecar("productpage"), bookinfo).versions()
        == build_snapshot(sidecar("productpage"), bookinfo, overrides=cleared).versions()
    )


def test_override_without_virtual_service_creates_a_weighted_route(bookinfo: MeshConfig) -> None:
    overrides = Overrides().with_weights(RouteWeights.of(RATINGS, {"v1": 100}))
    routes = vhost(
        resources(sidecar("reviews"), bookinfo, overrides=overrides)["RDS"], "9080", f"{RATINGS}:9080"
    )["routes"]
    assert (
        routes[-1]["match"] == {"prefix": "/"}
        and routes[-1]["route"]["cluster"] == f"outbound|9080|v1|{RATINGS}"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RouteWeights.of(REVIEWS, {"v1": 60, "v2": 30}), "sum to 90"),
        (lambda: RouteWeights.of(REVIEWS, {"v1": 110, "v2": -10}), "must not be negative"),
        (lambda: CircuitBreaker(REVIEWS, max_connections=0), "max_connections must be > 0"),
        (lambda: CircuitBreaker(REVIEWS), "at least one threshold"),
        (lambda: OutlierOverride(REVIEWS, max_ejection_percent=101), "0-100"),
    ],
)
def test_malformed_overrides_are_refused(make: Any, message: str) -> None:
    with pytest.raises(OverrideError, match=message):
        make()


def test_overrides_must_name_known_hosts_and_subsets(bookinfo: MeshConfig) -> None:
    bad = (
        Overrides()
        .with_weights(RouteWeights.of(REVIEWS, {"v1": 50, "v9": 50}))
        .with_outlier(OutlierOverride("nope.x", consecutive_5xx=1))
    )
    problems = bad.problems(bookinfo)
    assert any('subset "v9"' in p for p in problems) and any('unknown host "nope.x"' in p for p in problems)
    with pytest.raises(TranslationError, match="v9"):
        build_snapshot(sidecar("productpage"), bookinfo, overrides=bad)


# --- dump, CLI, pusher ------------------------------------------------------------------------


def test_config_dump_and_cli(bookinfo: MeshConfig, capsys: pytest.CaptureFixture[str]) -> None:
    dumped = config_dump(GATEWAY.id, bookinfo, labels={"istio": "ingressgateway"})
    assert dumped["node"]["role"] == "gateway" and dumped["resources"]["routes"][0]["name"] == "http.80"
    import argparse

    parser = argparse.ArgumentParser()
    add_config_command(parser.add_subparsers())
    args = parser.parse_args(["config", "dump", "--node", sidecar("reviews").id, "--mesh-dir", str(BOOKINFO)])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in out["resources"]["clusters"]} >= {"inbound|9084||"}


async def test_pusher_builds_new_nodes_and_skips_unchanged(bookinfo: MeshConfig) -> None:
    cache = SnapshotCache(external_clusters={"meshloop_collector"})
    pusher = MeshPusher(cache, debounce_s=0.01)
    pusher.update_config(bookinfo)
    pusher.push_all()
    node = NodeInfo(sidecar("productpage").id, metadata={"LABELS": {"app": "productpage", "version": "v1"}})
    assert cache.snapshot_for(node) is not None  # the default, which records the node
    for _ in range(100):
        if cache.snapshot(node.id) is not None:
            break
        await asyncio.sleep(0.001)
    first = cache.snapshot(node.id)
    assert first is not None and "inbound|9081||" in first.names(CLUSTER)
    pusher.push_all()
    assert cache.snapshot(node.id) is first  # unchanged: not republished
    pusher.set_overrides(Overrides().with_weights(RouteWeights.of(REVIEWS, {"v1": 0, "v2": 100})))
    pusher.push_all()
    second = cache.snapshot(node.id)
    assert (
        second is not None
        and second.version(ROUTE) != first.version(ROUTE)
        and second.version(CLUSTER) == first.version(CLUSTER)
    )
    with pytest.raises(OverrideError):
        pusher.set_overrides(Overrides().with_weights(RouteWeights.of(REVIEWS, {"v7": 100})))
    assert pusher.status()["nodes"][node.id]["error"] is None


async def test_pusher_keeps_last_good_snapshot_on_failure(bookinfo: MeshConfig) -> None:
    cache = SnapshotCache()
    pusher = MeshPusher(cache)
    pusher.update_config(bookinfo)
    node = NodeInfo("sidecar~127.0.0.1~productpage.bookinfo~bookinfo.svc.cluster.local")
    pusher.push_all()
    cache.snapshot_for(node)  # the node asks: it is recorded and built on the next loop turn
    await asyncio.sleep(0)
    good = cache.snapshot(node.id)
    assert good is not None
    broken = MeshConfig.build([(r, None) for r in bookinfo.resources if r.kind != "DestinationRule"])
    pusher.update_config(broken)  # the reviews VirtualService now names subsets nobody defines
    pusher.push_all()
    assert cache.snapshot(node.id) is good
    assert "not in CDS" in pusher.status()["nodes"][node.id]["error"]


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 100), min_size=2, max_size=3).filter(lambda ws: sum(ws[:-1]) <= 100))
def test_weights_summing_to_100_stay_summing_to_100(bookinfo: MeshConfig, raw: list[int]) -> None:
    weights = [*raw[:-1], 100 - sum(raw[:-1])]
    entry = RouteWeights.of(REVIEWS, dict(zip(("v1", "v2", "v3"), weights, strict=False)))
    rds = resources(sidecar("productpage"), bookinfo, overrides=Overrides().with_weights(entry))["RDS"]
    canary = vhost(rds, "9080", f"{REVIEWS}:9080")["routes"][1]["route"]
    clusters = canary["weighted_clusters"]["clusters"]
    assert (
        sum(c.get("weight", 0) for c in clusters) == 100 and "total_weight" not in canary["weighted_clusters"]
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_every_valid_subset_of_bookinfo_gives_consistent_snapshots(
    bookinfo: MeshConfig, data: st.DataObject
) -> None:
    chosen = data.draw(st.lists(st.sampled_from(bookinfo.resources), unique_by=lambda r: r.key))
    config = MeshConfig.build([(r, None) for r in chosen])
    if any(i.severity == "error" for i in validate(config)):
        return
    for proxy in (sidecar("productpage"), sidecar("reviews", "v2"), GATEWAY):
        assert build_snapshot(proxy, config).consistent({"meshloop_collector"}) == []
