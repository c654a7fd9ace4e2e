"""Many simulated Envoys on real ADS streams, in one process (for :mod:`benchmarks.ads_scale`).

``python -m benchmarks.ads_clients --target HOST:PORT [--clients 1000] [--channels 50]``
opens ``clients`` ``StreamAggregatedResources`` streams with grpc.aio, spread round-robin
over ``channels`` channels. Each channel has its own subchannel pool
(``grpc.use_local_subchannel_pool``), so each is its own HTTP/2 connection (gRPC would
otherwise share one connection between channels with equal arguments); streams on one
channel share its connection, as Envoy's ADS stream has a connection to itself.

Each stream behaves like an Envoy SotW client (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):
a unique node (sent on the first request only), CDS wildcard first; every response is ACKed
(``version_info`` + ``response_nonce``, same names); the first CDS response subscribes EDS to
the EDS clusters' ``service_name``\\s (re-subscribed when they change), the first EDS
response subscribes LDS (wildcard), each LDS response subscribes RDS to the listeners'
route names when they change. Per client, the receive time (Unix seconds) of each RDS
response that changes its version is recorded.

Prints ``{"started": t}`` when the streams are started; then commands on stdin, one JSON
line answer each on stdout:

* ``wait VERSION SINCE TIMEOUT`` — until every client has received RDS ``VERSION`` at or
  after ``SINCE`` (Unix seconds), or the timeout:
  ``{"received": n, "times": [...], "cpu_s", "errors", "open"}``.
* ``stats`` — ``{"cpu_s", "errors", "open"}``: CPU seconds of this process, streams that
  ended with an error, streams open.
* ``quit`` — cancel the streams and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Mapping, Sequence

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest as Request

from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, cluster_eds_name, listener_route_names


class Tracker:
    """When each client's RDS version last changed to each version; wakes waiters."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.current: dict[int, str] = {}  # client -> RDS version it holds
        self.received: dict[str, dict[int, float]] = {}  # version -> client -> when it arrived
        self.changed = asyncio.Event()
        self.errors = 0
        self.open = 0

    def route(self, client: int, version: str, at: float) -> None:
        if self.current.get(client) != version:  # a resend of the held version is no change
            self.current[client] = version
            self.received.setdefault(version, {})[client] = at
            self.changed.set()

    def arrivals(self, version: str, since: float) -> list[float]:
        """When clients received ``version``, counting only arrivals at or after ``since``."""
        return [at for at in self.received.get(version, {}).values() if at >= since]

    async def wait(self, version: str, since: float, timeout: float) -> list[float]:
        """Arrival times of ``version`` (since ``since``) once every client has it, or at the timeout."""
        deadline = time.monotonic() + timeout
        while len(got := self.arrivals(version, since)) < self.clients and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(deadline - time.monotonic(), 1.0))
            except TimeoutError:
                pass
        return got


def _names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    """What a CDS or LDS response makes the client subscribe to next (EDS or RDS names)."""
    names: set[str] = set()
    if response.type_url == CLUSTER:
        for packed in response.resources:
            eds = cluster_eds_name(cluster_pb2.Cluster.FromString(packed.value))
            if eds is not None:
                names.add(eds)
    elif response.type_url == LISTENER:
        for packed in response.resources:
            names.update(listener_route_names(listener_pb2.Listener.FromString(packed.value)))
    return sorted(names)


class FakeEnvoy:
    """One ADS stream's SotW subscription state."""

    def __init__(self, index: int, tracker: Tracker) -> None:
        self.index = index
        self.tracker = tracker
        self.subscribed: dict[str, list[str]] = {}
        self.last: dict[str, tuple[str, str]] = {}  # type_url -> (version, nonce) last received

    def node(self) -> base_pb2.Node:
        i = self.index
        return base_pb2.Node(
            id=f"sidecar~10.8.{i // 250}.{i % 250 + 1}~bench-{i}.bench~bench.svc.cluster.local",
            cluster="bench",
        )

    def request(self, type_url: str) -> Request:
        version, nonce = self.last.get(type_url, ("", ""))
        return Request(
            type_url=type_url,
            version_info=version,
            response_nonce=nonce,
            resource_names=self.subscribed[type_url],
        )

    def subscribe(self, type_url: str, names: Sequence[str]) -> Request | None:
        """The request that (re)subscribes ``type_url`` to ``names``; ``None`` if unchanged."""
        if self.subscribed.get(type_url) == list(names):
            return None
        self.subscribed[type_url] = list(names)
        return self.request(type_url)

    def on_response(self, response: discovery_pb2.DiscoveryResponse) -> list[Request]:
        """ACK ``response`` and return the requests Envoy would send next."""
        type_url = response.type_url
        if type_url == ROUTE:
            self.tracker.route(self.index, response.version_info, time.time())
        self.last[type_url] = (response.version_info, response.nonce)
        out: list[Request | None] = [self.request(type_url)]
        if type_url == CLUSTER:
            out.append(self.subscribe(ENDPOINT, _names(response)))
        elif type_url == ENDPOINT:
            out.append(self.subscribe(LISTENER, []))
        elif type_url == LISTENER:
            out.append(self.subscribe(ROUTE, _names(response)))
        return [r for r in out if r is not None]

    async def run(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
        call = stub.StreamAggregatedResources()
        self.subscribed[CLUSTER] = []
        first = self.request(CLUSTER)
        first.node.CopyFrom(self.node())
        self.tracker.open += 1
        try:
            await call.write(first)
            while (response := await call.read()) is not grpc.aio.EOF:
                for request in self.on_response(response):
                    await call.write(request)
        except grpc.aio.AioRpcError:
            self.tracker.errors += 1
        finally:
            self.tracker.open -= 1


def _stats(tracker: Tracker) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "errors": tracker.errors, "open": tracker.open}


def _reply(payload: Mapping[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def drive(args: argparse.Namespace) -> None:
    tracker = Tracker(args.clients)
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
    _reply({"started": time.time()})
    tasks = [
        asyncio.create_task(FakeEnvoy(i, tracker).run(stubs[i % len(stubs)])) for i in range(args.clients)
    ]
    reader = await _commands()
    try:
        while line := (await reader.readline()).decode():
            words = line.split()
            if words and words[0] == "wait":
                got = await tracker.wait(words[1], float(words[2]), float(words[3]))
                _reply({"received": len(got), "times": got, **_stats(tracker)})
            elif words and words[0] == "stats":
                _reply(_stats(tracker))
            elif words and words[0] == "quit":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the ADS server")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=50)
    asyncio.run(drive(parser.parse_args()))


if __name__ == "__main__":
    main()
