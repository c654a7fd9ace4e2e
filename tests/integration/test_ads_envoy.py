"""meshloop's ADS server against real Envoys (SotW and delta): config, weight flips, NACKs,
removals, reconnects, status. Everything polls to a deadline."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from prometheus_client import REGISTRY

from meshloop.xds.bootstrap import AdsApi, BootstrapOptions, build_bootstrap
from meshloop.xds.cache import SnapshotCache
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshloop.xds.server import start_xds_server
from meshloop.xds.snapshot import Snapshot
from meshloop.xds.status import XdsEvent, XdsStatus, proxy_status_table
from tests.integration.envoy_process import EnvoyProcess, free_port
from tests.integration.http_servers import named_servers

pytestmark = pytest.mark.integration

NODE = "sidecar~127.0.0.1~app.default~default.svc.cluster.local"
DEADLINE = 15.0


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    """Two HTTP servers answering ``blue`` and ``green``; yields {name: port}."""
    with named_servers("blue", "green") as ports:
        yield ports


# --- hand-built resources ---------------------------------------------------------------

ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def listener(port: int, route_name: str = "routes", drain: int = 1) -> listener_pb2.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix="ingress",
        rds=hcm.Rds(config_source=ADS, route_config_name=route_name),
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
        drain_timeout=duration_pb2.Duration(seconds=drain),
    )
    return listener_pb2.Listener(
        name="http",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
                    )
                ]
            )
        ],
    )


def routes(weights: dict[str, int]) -> route_pb2.RouteConfiguration:
    action = route_components_pb2.RouteAction(
        weighted_clusters=route_components_pb2.WeightedCluster(
            clusters=[
                route_components_pb2.WeightedCluster.ClusterWeight(
                    name=name, weight=wrappers_pb2.UInt32Value(value=weight)
                )
                for name, weight in weights.items()
            ]
        )
    )
    return route_pb2.RouteConfiguration(
        name="routes",
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"), route=action
                    )
                ],
            )
        ],
    )


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
        connect_timeout=duration_pb2.Duration(seconds=1),
    )


def assignment(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=address)
                    )
                ]
            )
        ],
    )


def mesh_snapshot(
    listen_port: int, backends: dict[str, int], weights: dict[str, int], extra: dict[str, int] | None = None
) -> Snapshot:
    clusters = {**backends, **(extra or {})}
    return Snapshot.build(
        {
            LISTENER: [listener(listen_port)],
            ROUTE: [routes(weights)],
            CLUSTER: [eds_cluster(name) for name in clusters],
            ENDPOINT: [assignment(name, port) for name, port in clusters.items()],
        }
    )


# --- harness ------------------------------------------------------------------------------


@dataclass
class Plane:
    cache: SnapshotCache
    status: XdsStatus
    events: list[XdsEvent]
    port: int
    server: grpc.aio.Server

    def proxy(self, node_id: str = NODE) -> dict[str, Any]:
        for row in self.status.status():
            if row["node_id"] == node_id:
                return row
        return {"node_id": node_id, "types": {}, "streams": 0, "cluster": ""}

    def state(self, short: str, node_id: str = NODE) -> str:
        entry = self.proxy(node_id)["types"].get(short)
        return entry["state"] if entry else "NOT SENT"

    def all_synced(self, snapshot: Snapshot, node_id: str = NODE) -> bool:
        types = self.proxy(node_id)["types"]
        return all(
            types.get(short, {}).get("acked_version") == snapshot.version(url)
            for short, url in (("CDS", CLUSTER), ("EDS", ENDPOINT), ("LDS", LISTENER), ("RDS", ROUTE))
        )


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    events: list[XdsEvent] = []
    status = XdsStatus(on_event=events.append)
    cache = SnapshotCache()
    server, port = await start_xds_server(cache, "127.0.0.1", 0, status=status)
    yield Plane(cache, status, events, port, server)
    await server.stop(0)


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``predicate`` (sync, on the loop) until truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


async def answers(port: int, expected: str, timeout: float = DEADLINE, streak: int = 1) -> None:
    """Wait until ``streak`` consecutive requests through Envoy answer ``expected``."""
    deadline = time.monotonic() + timeout
    good, last = 0, (0, "")
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(get, port)
        good = good + 1 if last == (200, expected) else 0
        if good >= streak:
            return
        if not good:
            await asyncio.sleep(0.005)
    raise AssertionError(f"port {port} answered {last}, not {expected!r}, within {timeout}s")


def bootstrap(xds_port: int, ads_api: AdsApi = "GRPC") -> dict[str, Any]:
    options = BootstrapOptions(
        admin_port=free_port(),
        xds_port=xds_port,
        ads=True,
        ads_api=ads_api,
        stats_sink="none",  # type: ignore[arg-type]
    )
    return build_bootstrap(options)


async def start(
    start_envoy: Callable[[dict[str, Any]], EnvoyProcess], config: dict[str, Any]
) -> EnvoyProcess:
    """Start Envoy off the event loop: it needs our (in-loop) ADS server to become ready."""
    return await asyncio.to_thread(start_envoy, config)


async def serve_blue(
    plane: Plane,
    start_envoy: Callable[[dict[str, Any]], EnvoyProcess],
    backends: dict[str, int],
    ads_api: AdsApi = "GRPC",
    extra: dict[str, int] | None = None,
) -> tuple[int, Snapshot, EnvoyProcess]:
    """Publish blue 100 / green 0, start an Envoy, wait for traffic and all four ACKs.
    Returns (listener port, snapshot, Envoy)."""
    listen = free_port()
    snapshot = mesh_snapshot(listen, backends, {"blue": 100, "green": 0}, extra=extra)
    plane.cache.set_snapshot(NODE, snapshot)
    envoy = await start(start_envoy, bootstrap(plane.port, ads_api))
    await answers(listen, "blue", streak=3)
    await wait_for(lambda: plane.all_synced(snapshot), "all four types ACKed")
    return listen, snapshot, envoy


# --- tests ----------------------------------------------------------------------------------


async def test_sotw_traffic_weight_flip_and_status(
    plane: Plane, backends: dict[str, int], start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    listen, first, envoy = await serve_blue(plane, start_envoy, backends)
    _print_push_to_ack(plane, "SotW initial")
    table = proxy_status_table(plane.status.status())
    assert NODE in table and table.count("SYNCED") == 4, table
    assert plane.proxy()["envoy_version"].startswith("1.")
    assert [e.kind for e in plane.events][:1] == ["CONNECT"]

    flipped = mesh_snapshot(listen, backends, {"blue": 0, "green": 100})
    assert flipped.version(ROUTE) != first.version(ROUTE) and flipped.version(CLUSTER) == first.version(
        CLUSTER
    )
    pushes_before = _sent_times(plane)
    started = time.monotonic()
    plane.cache.set_snapshot(NODE, flipped)
    await wait_for(
        lambda: plane.proxy()["types"]["RDS"]["acked_version"] == flipped.version(ROUTE), "RDS ACK"
    )
    push_to_ack = time.monotonic() - started
    await answers(listen, "green", timeout=1.0, streak=5)
    served = time.monotonic() - started
    print(
        f"\nweight flip: set_snapshot -> RDS ACK {push_to_ack * 1000:.1f} ms, served {served * 1000:.1f} ms"
    )
    assert push_to_ack < 1.0
    # only RDS changed: CDS/EDS/LDS were not pushed again
    after = _sent_times(plane)
    assert {k for k in after if after[k] != pushes_before[k]} == {"RDS"}
    assert (
        envoy.stats("listener_manager.lds.update_rejected").get("listener_manager.lds.update_rejected", 0)
        == 0
    )


def _print_push_to_ack(plane: Plane, what: str) -> None:
    types = plane.proxy()["types"]
    times = {t: f"{(e['acked_at'] - e['sent_at']) * 1000:.1f} ms" for t, e in types.items() if e["acked_at"]}
    print(f"\n{what}: push->ACK {times}")


def _pushes() -> float:
    return sum(
        REGISTRY.get_sample_value("meshloop_xds_pushes_total", {"type": t}) or 0.0
        for t in ("cds", "eds", "lds", "rds")
    )


def _sent_times(plane: Plane) -> dict[str, float]:
    return {short: entry["sent_at"] for short, entry in plane.proxy()["types"].items()}


async def test_nack_keeps_last_good_config_then_recovers(
    plane: Plane, backends: dict[str, int], start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    listen, good, _ = await serve_blue(plane, start_envoy, backends)

    bad = mesh_snapshot(listen, backends, {"blue": 0, "green": 0})  # weights sum to 0
    plane.cache.set_snapshot(NODE, bad)
    await wait_for(lambda: plane.state("RDS") == "NACKed", "RDS NACK")
    rds = plane.proxy()["types"]["RDS"]
    assert rds["nack"]["version"] == bad.version(ROUTE)
    assert rds["acked_version"] == good.version(ROUTE)
    assert rds["nack"]["message"], rds
    nacks = [e for e in plane.events if e.kind == "NACK"]
    assert nacks and nacks[0].type_url == ROUTE and nacks[0].version == bad.version(ROUTE)
    assert "NACKed" in proxy_status_table(plane.status.status())
    await answers(listen, "blue", streak=5)  # the last good config keeps serving

    recovered = mesh_snapshot(listen, backends, {"blue": 0, "green": 100})
    plane.cache.set_snapshot(NODE, recovered)
    await wait_for(lambda: plane.state("RDS") == "SYNCED", "RDS ACK after NACK")
    assert plane.proxy()["types"]["RDS"]["acked_version"] == recovered.version(ROUTE)
    await answers(listen, "green", streak=5)


async def test_delta_config_and_removal(
    plane: Plane,
    backends: dict[str, int],
    start_envoy: Callable[[dict[str, Any]], EnvoyProcess],
    upstream: int,
) -> None:
    listen, _, envoy = await serve_blue(plane, start_envoy, backends, "DELTA_GRPC", extra={"spare": upstream})
    _print_push_to_ack(plane, "delta initial")
    assert "spare::" in envoy.admin("/clusters")[1]

    without = mesh_snapshot(listen, backends, {"blue": 0, "green": 100})
    plane.cache.set_snapshot(NODE, without)
    await wait_for(lambda: "spare::" not in envoy.admin("/clusters")[1], "cluster 'spare' removed")
    await answers(listen, "green", streak=3)
    await wait_for(lambda: plane.all_synced(without), "delta removal ACKed")
    assert "blue::" in envoy.admin("/clusters")[1]


async def test_envoy_restart_gets_config_again(
    plane: Plane, backends: dict[str, int], start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    listen, snapshot, first = await serve_blue(plane, start_envoy, backends)
    await asyncio.to_thread(first.stop)
    await wait_for(lambda: plane.proxy()["streams"] == 0, "stream closed")
    assert any(e.kind == "DISCONNECT" for e in plane.events)

    await start(start_envoy, bootstrap(plane.port))  # same node id, new process
    await answers(listen, "blue")
    await wait_for(lambda: plane.all_synced(snapshot), "config ACKed by the new Envoy")
    assert sum(e.kind == "CONNECT" for e in plane.events) == 2


@pytest.mark.parametrize("ads_api", ["GRPC", "DELTA_GRPC"])
async def test_control_plane_restart_does_not_resend_unchanged(
    backends: dict[str, int], start_envoy: Callable[[dict[str, Any]], EnvoyProcess], ads_api: AdsApi
) -> None:
    listen = free_port()
    snapshot = mesh_snapshot(listen, backends, {"blue": 100, "green": 0})
    cache = SnapshotCache()
    cache.set_snapshot(NODE, snapshot)
    first_status = XdsStatus()
    server, port = await start_xds_server(cache, "127.0.0.1", 0, status=first_status)
    await start(start_envoy, bootstrap(port, ads_api))
    await answers(listen, "blue")
    await server.stop(0)
    pushes = _pushes()

    events: list[XdsEvent] = []
    status = XdsStatus(on_event=events.append)
    server, _ = await start_xds_server(cache, "127.0.0.1", port, status=status)
    try:
        # Envoy reconnects (backoff 0.5-5 s) telling us what it holds; versions are content
        # hashes, so nothing needs to be sent again.
        plane = Plane(cache, status, events, port, server)
        await wait_for(lambda: plane.all_synced(snapshot), "reconnected Envoy in sync", timeout=20)
        await answers(listen, "blue")
        if ads_api == "GRPC":  # (delta answers a new subscription, with no resources)
            assert _pushes() == pushes
    finally:
        await server.stop(0)
