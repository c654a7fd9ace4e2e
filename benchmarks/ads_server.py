"""A meshloop ADS server with a synthetic mesh, driven over stdin (for :mod:`benchmarks.ads_scale`).

``python -m benchmarks.ads_server [--services 200] [--ports 10] [--endpoints 3]`` serves one
default snapshot (every node) from :class:`~meshloop.xds.cache.SnapshotCache` through
:func:`~meshloop.xds.server.start_xds_server` on a free port, then prints one JSON line
``{"port", "version", "resources", **stats}`` (``version`` = the RDS version, stats as for
``stats`` below). With ``--bare`` the same mesh is served by :class:`BareAds` instead, the
floor a grpc.aio server in Python cannot go under. With ``--generate`` the mesh is written
as Istio config and translated by :func:`meshloop.xds.generate.build_snapshot` (600 clusters:
Istio adds a subset-less one per service; a weight change is an ``Overrides`` entry).

The mesh: ``services`` services, each on one of ``ports`` ports with subsets v1/v2 →
``2 × services`` EDS clusters (Istio names ``outbound|port|subset|host``), one
ClusterLoadAssignment per cluster (``endpoints`` endpoints each), one RouteConfiguration
per port (named after it) with a virtual host per service routing 90/10 to v1/v2, one
outbound listener per port loading that route config over ADS.

Commands, one per stdin line, each answered by one JSON line on stdout:

* ``flip`` — toggle ``reviews-17`` between 90/10 and 0/100, rebuild the whole snapshot and
  publish it: ``{"changed_at", "set_at", "version"}`` (Unix seconds, taken when the command
  was read and after ``set_default`` returned).
* ``acked VERSION N TIMEOUT`` — wait until ``N`` nodes have ACKed RDS ``VERSION`` (the
  latest published) since it was published: ``{"acked", "last_ack_at", **stats}``.
* ``stats`` — ``{"cpu_s", "rss_mib", "peak_rss_mib"}`` of this process (all threads).
* ``quit`` — stop the server and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ep
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from meshloop.xds.cache import SnapshotCache
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshloop.xds.server import start_xds_server
from meshloop.xds.snapshot import Snapshot
from meshloop.xds.status import XdsStatus

BASES = "productpage reviews ratings details cart checkout payment search user stock".split()
FLIPPED = "reviews-17"
DOMAIN = "bench.svc.cluster.local"
Publish = Callable[[Snapshot], None]
ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


@dataclass(frozen=True)
class Mesh:
    """The synthetic mesh: service names, their ports, weights (v1, v2) and endpoint count."""

    services: tuple[str, ...]
    ports: tuple[int, ...]
    weights: tuple[tuple[int, int], ...]
    endpoints: int = 3

    @classmethod
    def make(cls, services: int, ports: int, endpoints: int) -> Mesh:
        names = tuple(f"{BASES[i % len(BASES)]}-{i // len(BASES)}" for i in range(services))
        port_list = tuple(9000 + (i % ports) for i in range(services))
        return cls(names, port_list, ((90, 10),) * services, endpoints)

    def flipped(self, service: str = FLIPPED) -> Mesh:
        """The mesh with ``service``'s weights toggled between 90/10 and 0/100."""
        i = self.services.index(service)
        weights = list(self.weights)
        weights[i] = (0, 100) if weights[i] == (90, 10) else (90, 10)
        return replace(self, weights=tuple(weights))


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def cluster_name(service: str, port: int, subset: str) -> str:
    return f"outbound|{port}|{subset}|{service}.{DOMAIN}"


def _cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS, service_name=name),
        connect_timeout=duration_pb2.Duration(seconds=1),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
    )


def _assignment(name: str, index: int, port: int, count: int) -> endpoint_pb2.ClusterLoadAssignment:
    endpoints = [
        ep.LbEndpoint(
            endpoint=ep.Endpoint(address=_address(f"10.{index // 250}.{index % 250}.{k + 1}", port))
        )
        for k in range(count)
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[ep.LocalityLbEndpoints(lb_endpoints=endpoints)]
    )


def _virtual_host(service: str, port: int, weights: tuple[int, int]) -> rc.VirtualHost:
    split = rc.WeightedCluster(
        clusters=[
            rc.WeightedCluster.ClusterWeight(
                name=cluster_name(service, port, s), weight=wrappers_pb2.UInt32Value(value=w)
            )
            for s, w in zip(("v1", "v2"), weights, strict=True)
        ]
    )
    host = f"{service}.{DOMAIN}"
    return rc.VirtualHost(
        name=f"{host}:{port}",
        domains=[host, f"{host}:{port}", service, f"{service}:{port}"],
        routes=[rc.Route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(weighted_clusters=split))],
    )


def _listener(port: int) -> listener_pb2.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix=f"outbound_0.0.0.0_{port}",
        rds=hcm.Rds(config_source=ADS, route_config_name=str(port)),
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
            )
        ]
    )
    return listener_pb2.Listener(
        name=f"0.0.0.0_{port}", address=_address("0.0.0.0", port), filter_chains=[chain]
    )


def mesh_resources(mesh: Mesh) -> dict[str, list[Any]]:
    """``{type_url: [message, ...]}`` for the whole mesh (pure)."""
    clusters, assignments = [], []
    hosts: dict[int, list[rc.VirtualHost]] = {}
    for i, (service, port, weights) in enumerate(zip(mesh.services, mesh.ports, mesh.weights, strict=True)):
        for j, subset in enumerate(("v1", "v2")):
            name = cluster_name(service, port, subset)
            clusters.append(_cluster(name))
            assignments.append(_assignment(name, 2 * i + j, port, mesh.endpoints))
        hosts.setdefault(port, []).append(_virtual_host(service, port, weights))
    routes = [
        route_pb2.RouteConfiguration(name=str(port), virtual_hosts=vhosts)
        for port, vhosts in sorted(hosts.items())
    ]
    return {
        CLUSTER: clusters,
        ENDPOINT: assignments,
        LISTENER: [_listener(port) for port in sorted(hosts)],
        ROUTE: routes,
    }


def build(mesh: Mesh) -> Snapshot:
    """The snapshot of ``mesh``, hand-built."""
    return Snapshot.build(mesh_resources(mesh))


def _doc(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> str:
    api = "v1" if kind == "Service" else "networking.istio.io/v1"
    metadata = {"name": name, "namespace": namespace}
    return json.dumps({"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec})


def mesh_yaml(mesh: Mesh, namespace: str = "bench") -> str:
    """The same mesh as Kubernetes/Istio config (JSON documents, which are YAML): Services,
    WorkloadEntries, DestinationRules (subsets v1, v2), VirtualServices (the weights)."""
    docs: list[str] = []
    for i, (svc, port, weights) in enumerate(zip(mesh.services, mesh.ports, mesh.weights, strict=True)):
        ports = [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]
        docs.append(_doc("Service", svc, namespace, {"selector": {"app": svc}, "ports": ports}))
        for j, k in itertools.product(range(2), range(mesh.endpoints)):
            n, version = 2 * i + j, f"v{j + 1}"
            spec = {"address": f"10.{n // 250}.{n % 250}.{k + 1}", "labels": {"app": svc, "version": version}}
            docs.append(_doc("WorkloadEntry", f"{svc}-{version}-{k}", namespace, spec))
        subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
        docs.append(_doc("DestinationRule", svc, namespace, {"host": svc, "subsets": subsets}))
        route = [
            {"destination": {"host": svc, "subset": v}, "weight": w}
            for v, w in zip(("v1", "v2"), weights, strict=True)
        ]
        docs.append(_doc("VirtualService", svc, namespace, {"hosts": [svc], "http": [{"route": route}]}))
    return "\n---\n".join(docs) + "\n"


class Generated:
    """``--generate``: the mesh as config (:func:`mesh_yaml`) translated for one sidecar by
    :func:`meshloop.xds.generate.build_snapshot`; weight changes go in as ``Overrides``."""

    def __init__(self, mesh: Mesh, namespace: str = "bench") -> None:
        from meshloop.mesh import load_and_validate  # noqa: PLC0415  (only this mode needs translation)
        from meshloop.xds.proxy import Proxy  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="meshloop-ads-bench-") as directory:
            (Path(directory) / "mesh.yaml").write_text(mesh_yaml(mesh, namespace))
            config, issues = load_and_validate([directory])
        if config is None:
            raise SystemExit(f"generated mesh config is invalid: {issues}")
        self.config, self.initial, self.namespace = config, mesh, namespace
        self.proxy = Proxy(
            "sidecar", f"sidecar~10.9.0.1~client.{namespace}~{namespace}.svc.cluster.local", namespace
        )

    def build(self, mesh: Mesh) -> Snapshot:
        from meshloop.xds.generate import build_snapshot  # noqa: PLC0415
        from meshloop.xds.overrides import Overrides, RouteWeights  # noqa: PLC0415

        overrides = Overrides()
        for svc, now, then in zip(mesh.services, mesh.weights, self.initial.weights, strict=True):
            if now != then:
                host = f"{svc}.{self.namespace}.svc.cluster.local"
                overrides = overrides.with_weights(RouteWeights.of(host, {"v1": now[0], "v2": now[1]}))
        return build_snapshot(self.proxy, self.config, overrides)


class AckCounter:
    """Counts the nodes that ACKed one RDS version (set with :meth:`expect` when it is
    published) and wakes waiters."""

    def __init__(self) -> None:
        self.expected = ""
        self.acked_nodes: set[str] = set()
        self.last_ack_at = 0.0
        self.changed = asyncio.Event()

    def expect(self, version: str) -> None:
        self.expected, self.acked_nodes = version, set()

    def count(self, node_id: str, type_url: str, version: str) -> None:
        if type_url == ROUTE and version == self.expected and node_id not in self.acked_nodes:
            self.acked_nodes.add(node_id)
            self.last_ack_at = time.time()
            self.changed.set()

    async def wait(self, version: str, count: int, timeout: float) -> int:
        """How many nodes ACKed ``version`` (the expected one), once ``count`` did or at the timeout."""
        deadline = time.monotonic() + timeout
        while version == self.expected and len(self.acked_nodes) < count and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return len(self.acked_nodes) if version == self.expected else 0


class CountingStatus(XdsStatus):
    """:class:`XdsStatus` that also feeds an :class:`AckCounter`."""

    def __init__(self, counter: AckCounter) -> None:
        super().__init__()
        self.counter = counter

    def acked(self, node_id: str, type_url: str, version: str) -> None:
        super().acked(node_id, type_url, version)
        self.counter.count(node_id, type_url, version)


class BareAds:
    """The floor to compare with: an ADS over the same grpc.aio that only writes
    pre-serialized responses. A request with no nonce (a new subscription) gets the
    whole type; ACKs are only counted; a publish pushes RDS to every stream. No ACK
    state machine, no status, no per-stream response building."""

    def __init__(self, counter: AckCounter) -> None:
        self.counter = counter
        self.responses: dict[str, bytes] = {}
        self.queues: set[asyncio.Queue[str]] = set()

    def publish(self, snapshot: Snapshot) -> None:
        for url, typed in snapshot.types.items():
            response = DiscoveryResponse(version_info=typed.version, type_url=url)
            response.resources.extend(r.packed for r in typed.select(None))
            self.responses[url] = response.SerializeToString()
        for queue in self.queues:
            queue.put_nowait(ROUTE)

    async def _read(self, requests: AsyncIterator[bytes], queue: asyncio.Queue[str]) -> None:
        node_id = ""
        async for raw in requests:
            request = DiscoveryRequest.FromString(raw)
            node_id = node_id or request.node.id
            if not request.response_nonce:
                queue.put_nowait(request.type_url)
            else:
                self.counter.count(node_id, request.type_url, request.version_info)

    async def stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.add(queue)
        reader = asyncio.create_task(self._read(requests, queue))
        try:
            for nonce in itertools.count(1):
                tag = str(nonce).encode()  # field 5 (nonce) appended to the shared bytes
                await context.write(self.responses[await queue.get()] + bytes([0x2A, len(tag)]) + tag)
        finally:
            reader.cancel()
            self.queues.discard(queue)

    async def start(self, host: str) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 10_000)])
        handler = grpc.stream_stream_rpc_method_handler(self.stream)  # bytes in, bytes out
        service = "envoy.service.discovery.v3.AggregatedDiscoveryService"
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, {"StreamAggregatedResources": handler})]
        )
        port = server.add_insecure_port(f"{host}:0")
        await server.start()
        return server, port


def process_stats() -> dict[str, float]:
    """CPU seconds (all threads, user + system) and current/peak RSS in MiB of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mib": fields["VmRSS"],
        "peak_rss_mib": fields["VmHWM"],
    }


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _start(args: argparse.Namespace, counter: AckCounter) -> tuple[grpc.aio.Server, int, Publish]:
    if args.bare:
        bare = BareAds(counter)
        return (*await bare.start(args.host), bare.publish)
    if args.generate:
        from meshloop.xds.generate import BOOTSTRAP_CLUSTERS  # noqa: PLC0415

        cache = SnapshotCache(BOOTSTRAP_CLUSTERS)
    else:
        cache = SnapshotCache()
    server, port = await start_xds_server(cache, args.host, 0, status=CountingStatus(counter))
    return server, port, lambda snapshot: cache.set_default("all", lambda node: True, snapshot)


async def serve(args: argparse.Namespace) -> None:
    mesh, counter = Mesh.make(args.services, args.ports, args.endpoints), AckCounter()
    server, port, publish = await _start(args, counter)
    build_of = build
    if args.generate:
        build_of = Generated(mesh).build
    snapshot = build_of(mesh)
    counter.expect(snapshot.version(ROUTE))
    publish(snapshot)
    counts = {url: len(typed.by_name) for url, typed in snapshot.types.items() if typed.by_name}
    _reply({"port": port, "version": snapshot.version(ROUTE), "resources": counts, **process_stats()})
    reader = await _commands()
    try:
        while words := (await reader.readline()).decode().split():
            if words[0] == "flip":
                changed_at = time.time()
                mesh = mesh.flipped()
                snapshot = build_of(mesh)
                counter.expect(snapshot.version(ROUTE))
                publish(snapshot)
                _reply({"changed_at": changed_at, "set_at": time.time(), "version": snapshot.version(ROUTE)})
            elif words[0] == "acked":
                acked = await counter.wait(words[1], int(words[2]), float(words[3]))
                _reply({"acked": acked, "last_ack_at": counter.last_ack_at, **process_stats()})
            elif words[0] == "stats":
                _reply(process_stats())
            elif words[0] == "quit":
                break
    finally:
        await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--ports", type=int, default=10)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--bare", action="store_true", help="serve with BareAds (the floor), not meshloop")
    parser.add_argument("--generate", action="store_true", help="translate with meshloop.xds.generate")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
