"""Generated resources against real Envoys: every bookinfo proxy's config passes
``envoy --mode validate``, and a sidecar and a gateway fed over ADS by :class:`MeshPusher`
split traffic, follow a weight override, retry, inject faults, time out, trip circuit
breakers, eject outliers and route by host and path. Everything polls to a deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshloop.mesh import MeshConfig, load_and_validate
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from meshloop.xds.cache import SnapshotCache
from meshloop.xds.dump import config_dump
from meshloop.xds.generate import MeshPusher
from meshloop.xds.overrides import Overrides, RouteWeights
from meshloop.xds.server import start_xds_server
from tests.integration.envoy_process import EnvoyProcess, free_port, validate
from tests.integration.meshes import REVIEWS_MESH

SLOW_UPSTREAM = threading.Event()  # a slow upstream answers after SLOW_UPSTREAM_S
SLOW_UPSTREAM_S = 1.0
pytestmark = pytest.mark.integration

BOOKINFO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"
REVIEWS = "reviews.shop.svc.cluster.local"
DEADLINE = 15.0


# --- offline validation -----------------------------------------------------------------------


def inline_bootstrap(dump: dict[str, Any], bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The dumped resources as ``static_resources``: RDS inlined into each HCM, EDS clusters
    made STATIC with their load assignment, so ``--mode validate`` checks every field."""
    res = dump["resources"]
    routes = {r["name"]: r for r in res["routes"]}
    assignments = {a["cluster_name"]: a for a in res["endpoints"]}
    clusters = []
    for cluster in res["clusters"]:
        cluster = dict(cluster)
        if cluster.get("type") == "EDS":
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = assignments[cluster.pop("eds_cluster_config")["service_name"]]
        clusters.append(cluster)
    listeners = json.loads(json.dumps(res["listeners"]))
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                config = network_filter["typed_config"]
                if "rds" in config:
                    config["route_config"] = routes[config.pop("rds")["route_config_name"]]
    out = dict(bootstrap)
    out.pop("dynamic_resources", None)
    out["static_resources"] = {
        "clusters": bootstrap["static_resources"]["clusters"] + clusters,
        "listeners": listeners,
    }
    return out


BOOKINFO_NODES = [
    ("sidecar~127.0.0.1~productpage-v1.bookinfo~bookinfo.svc.cluster.local", None),
    ("sidecar~127.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local", None),
    ("sidecar~127.0.0.1~reviews-v2.bookinfo~bookinfo.svc.cluster.local", None),
    ("sidecar~127.0.0.1~reviews-v3.bookinfo~bookinfo.svc.cluster.local", None),
    ("sidecar~127.0.0.1~ratings-v1.bookinfo~bookinfo.svc.cluster.local", None),
    ("sidecar~127.0.0.1~details-v1.bookinfo~bookinfo.svc.cluster.local", None),
    ("router~127.0.0.1~ingress.bookinfo~bookinfo.svc.cluster.local", {"istio": "ingressgateway"}),
]


@pytest.mark.parametrize(
    ("node", "labels"), BOOKINFO_NODES, ids=lambda v: v.split("~")[2] if isinstance(v, str) else ""
)
def test_bookinfo_configs_pass_envoy_validate(
    node: str, labels: dict[str, str] | None, tmp_path: Path
) -> None:
    config, issues = load_and_validate([BOOKINFO])
    assert config is not None, issues
    dump = config_dump(node, config, labels=labels)
    assert dump["resources"]["listeners"] and dump["resources"]["clusters"]
    bootstrap = build_bootstrap(BootstrapOptions(admin_port=free_port(), stats_sink="none"))  # type: ignore[arg-type]
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(inline_bootstrap(dump, bootstrap)))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- upstreams ---------------------------------------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """Answers its server's name; ``mode``: ok, fail (500), fail_first (503 on a request id's
    first attempt), slow (answers after 1 s)."""

    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        status = 200
        with server.lock:
            server.hits += 1
            rid = self.headers.get("x-request-id", "")
            first = rid not in server.seen
            server.seen.add(rid)
        if server.mode == "fail" or (server.mode == "fail_first" and first):
            status = 500 if server.mode == "fail" else 503
        if server.mode == "slow":
            SLOW_UPSTREAM.wait(SLOW_UPSTREAM_S)  # the upstream's behaviour under test (never set)
        body = f"{server.name}\n".encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # Envoy gave up (route timeout) and closed the connection
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(name: str, mode: str = "ok") -> ThreadingHTTPServer:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.name, server.mode, server.hits, server.seen, server.lock = name, mode, 0, set(), threading.Lock()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def upstreams() -> Iterator[dict[str, ThreadingHTTPServer]]:
    servers = {
        "v1": _serve("v1"), "v2": _serve("v2"), "flaky": _serve("flaky", "fail_first"),
        "slow": _serve("slow", "slow"), "bad": _serve("bad", "fail"), "good": _serve("good"),
    }  # fmt: skip
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


MESH = REVIEWS_MESH + """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backends, namespace: shop}}
spec:
  hosts: [retry.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {svc}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {flaky}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: slow, namespace: shop}}
spec:
  hosts: [slow.test, cb.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {svc}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {slow}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: pair, namespace: shop}}
spec:
  hosts: [pair.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {svc}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {bad}}}}}, {{address: 127.0.0.1, ports: {{http: {good}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: retry, namespace: shop}}
spec:
  hosts: [retry.test]
  http: [{{route: [{{destination: {{host: retry.test}}}}], retries: {{attempts: 2, retryOn: 5xx}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fault, namespace: shop}}
spec:
  hosts: [slow.test]
  http:
  - match: [{{uri: {{prefix: /teapot}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: slow.test}}}}]
  - route: [{{destination: {{host: slow.test}}}}]
    timeout: 0.2s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cb, namespace: shop}}
spec:
  hosts: [cb.test]
  http: [{{route: [{{destination: {{host: cb.test}}}}], retries: {{attempts: 0}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cb, namespace: shop}}
spec:
  host: cb.test
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 1}}
      http: {{http1MaxPendingRequests: 1, http2MaxRequests: 1, maxRequestsPerConnection: 1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pair, namespace: shop}}
spec:
  hosts: [pair.test]
  http: [{{route: [{{destination: {{host: pair.test}}}}], retries: {{attempts: 0}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pair, namespace: shop}}
spec:
  host: pair.test
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection:
      {{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw}, name: http, protocol: HTTP}}
    hosts: [shop.example.com, api.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - match: [{{uri: {{prefix: /old}}}}]
    route: [{{destination: {{host: reviews, subset: v1}}}}]
  - route: [{{destination: {{host: reviews, subset: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: retry.test}}}}]}}]
"""


@dataclass
class Mesh:
    config: MeshConfig
    pusher: MeshPusher
    xds_port: int
    svc: int
    gw: int
    upstreams: dict[str, ThreadingHTTPServer]


@pytest.fixture
async def mesh(tmp_path: Path, upstreams: dict[str, ThreadingHTTPServer]) -> AsyncIterator[Mesh]:
    ports = {name: s.server_address[1] for name, s in upstreams.items()}
    svc, gw = free_port(), free_port()
    (tmp_path / "mesh.yaml").write_text(MESH.format(svc=svc, gw=gw, w1=50, w2=50, **ports))
    config, issues = load_and_validate([tmp_path / "mesh.yaml"])
    assert config is not None, [i.render() for i in issues]
    cache = SnapshotCache(external_clusters={"meshloop_collector", "meshloop_xds"})
    server, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
    pusher = MeshPusher(cache).start()
    pusher.update_config(config)
    pusher.push_all()
    yield Mesh(config, pusher, xds_port, svc, gw, upstreams)
    await pusher.close()
    await server.stop(0)


async def start_proxy(
    start_envoy: Callable[[dict[str, Any]], EnvoyProcess], mesh: Mesh, role: str = "sidecar"
) -> EnvoyProcess:
    labels = (("istio", "ingressgateway"),) if role == "gateway" else ()
    options = BootstrapOptions(
        admin_port=free_port(), xds_port=mesh.xds_port, collector_port=free_port(), role=role,  # type: ignore[arg-type]
        workload="client" if role == "sidecar" else "ingress", namespace="shop",
        stats_sink="none", extra_labels=labels,  # type: ignore[arg-type]
    )  # fmt: skip
    bootstrap = build_bootstrap(options)
    bootstrap["node"]["metadata"]["MESHLOOP_OUTBOUND_ADDRESS"] = "127.0.0.1"
    return await asyncio.to_thread(start_envoy, bootstrap)


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode().strip()
    except OSError:
        return 0, ""
    finally:
        conn.close()


async def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- traffic -----------------------------------------------------------------------------------


async def test_weighted_split_then_override_converges(
    mesh: Mesh, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    await start_proxy(start_envoy, mesh)
    await until(lambda: get(mesh.svc, "reviews")[0] == 200, "reviews through the sidecar")
    counts = Counter(await asyncio.to_thread(lambda: [get(mesh.svc, "reviews")[1] for _ in range(400)]))
    # 50/50 over 400 requests: mean 200, sd 10; 4.5 sd either side
    assert 155 <= counts["v1"] <= 245 and counts["v1"] + counts["v2"] == 400, counts

    started = time.monotonic()
    mesh.pusher.set_overrides(Overrides().with_weights(RouteWeights.of(REVIEWS, {"v1": 0, "v2": 100})))

    def all_v2() -> bool:
        return all(get(mesh.svc, "reviews")[1] == "v2" for _ in range(20))

    await until(all_v2, "every request on v2", timeout=1.0 + 0.5)
    converged = time.monotonic() - started
    print(
        f"\nweight override 50/50 -> 0/100: all traffic on v2 {converged * 1000:.0f} ms after set_overrides"
    )
    assert converged < 1.5  # ~100 ms debounce + push; the bound includes 20 confirming requests
    assert mesh.pusher.status()["overrides"]["route_weights"][0]["weights"] == {"v1": 0, "v2": 100}


async def test_retry_fault_and_timeout(
    mesh: Mesh, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    await start_proxy(start_envoy, mesh)
    await until(
        lambda: get(mesh.svc, "retry.test")[0] != 0 and get(mesh.svc, "retry.test")[0] != 404,
        "retry.test routed",
    )
    flaky: Any = mesh.upstreams["flaky"]
    before = flaky.hits
    assert get(mesh.svc, "retry.test") == (200, "flaky")  # first attempt 503, retried
    assert flaky.hits - before == 2
    assert get(mesh.svc, "slow.test", "/teapot")[0] == 418
    started = time.monotonic()
    assert get(mesh.svc, "slow.test", "/")[0] == 504
    assert time.monotonic() - started < 0.9  # the 0.2 s route timeout, not the 1 s upstream


async def test_circuit_breaker_overflow_and_outlier_ejection(
    mesh: Mesh, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    envoy = await start_proxy(start_envoy, mesh)
    await until(lambda: get(mesh.svc, "pair.test")[0] in (200, 500), "pair.test routed")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: get(mesh.svc, "cb.test")[0], range(8)))
    assert 503 in codes and 200 in codes, codes  # admitted ones wait 1 s; the rest overflow
    overflow = envoy.stats("upstream_rq_pending_overflow")
    assert sum(overflow.values()) > 0, overflow

    def ejected() -> bool:
        for _ in range(4):
            get(mesh.svc, "pair.test")
        stats = envoy.stats("pair.test.*ejections_active")
        return any(v >= 1 for k, v in stats.items() if k.endswith("outlier_detection.ejections_active"))

    await until(ejected, "the failing endpoint ejected")
    assert all(get(mesh.svc, "pair.test") == (200, "good") for _ in range(10))


async def test_gateway_routes_by_host_and_path(
    mesh: Mesh, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    await start_proxy(start_envoy, mesh, role="gateway")
    await until(lambda: get(mesh.gw, "shop.example.com", "/old")[0] == 200, "the gateway routing")
    assert get(mesh.gw, "shop.example.com", "/old/page") == (200, "v1")
    assert get(mesh.gw, "shop.example.com", "/new") == (200, "v2")
    assert get(mesh.gw, "api.example.com", "/x")[0] == 200
    assert get(mesh.gw, "unknown.example.com", "/")[0] == 404
