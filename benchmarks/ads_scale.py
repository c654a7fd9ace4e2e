"""ADS at scale: 1,000 simulated Envoys on one meshloop, a weight change, time to converge.

Two subprocesses on this machine (they share its cores with each other):

* :mod:`benchmarks.ads_server` — ``SnapshotCache`` + ``start_xds_server`` serving one default
  snapshot of 200 services (400 EDS clusters and ClusterLoadAssignments, 10 listeners, 10
  route configs of 20 weighted virtual hosts each) to every node;
* :mod:`benchmarks.ads_clients` — 1,000 grpc.aio SotW ADS streams over 50 channels (50
  HTTP/2 connections, 20 streams each; ``--channels 1000`` gives each its own, as real
  Envoys have), subscribing CDS → EDS → LDS → RDS and ACKing every response like Envoy.

Measured: the initial full sync of all clients (clients started → the last one holds RDS);
then ``FLIPS`` times: ``reviews-17`` 90/10 → 0/100 (and back), the server rebuilds and
publishes the whole snapshot, and for each client the time from the change (the server
reading the command, before the rebuild) to that client receiving the RDS response with
the new version. Times are ``time.time()`` in both processes (one host, one clock); the
receive time includes the client process's own queueing, so it is an upper bound.
Server CPU (all threads) for a flip runs from before the change to the last ACK.

Baselines: the issue's targets (all updated within 1 s; RSS under 1 GiB), the low end of
production p90 convergence (1.5 s), and a floor measured in the same run the same way:
``ads_server --bare`` (:class:`benchmarks.ads_server.BareAds`), an ADS on the same grpc.aio
that only writes pre-serialized responses — what any Python grpc.aio server pays for the
same bytes to the same clients. The cost of building and serializing the responses
alone (in this process, no gRPC) is printed too.

The server runs the mesh as a default snapshot (``set_default``: every node shares it).
The machine's other load shows in every figure; compare with the floor of the same run.

``--generate``: meshloop serves the same mesh written as Istio config and translated by
``meshloop.xds.generate.build_snapshot`` (600 clusters: one subset-less cluster per service
too; a weight change is an ``Overrides`` entry; the rebuild is part of the convergence).

``python -m benchmarks.ads_scale [--clients N] [--channels N] [--flips N] [--generate]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.ads_server import Mesh, build
from benchmarks.harness import Result, print_table
from meshloop.xds.resources import PUSH_ORDER, ROUTE, short_name
from meshloop.xds.snapshot import Snapshot

CLIENTS = 1000
CHANNELS = 50
FLIPS = 5
TARGET_MS = 1000.0
PROD_P90_MS = 1500.0
RSS_LIMIT_MIB = 1024.0
SYNC_TIMEOUT_S = 60.0
CONVERGE_TIMEOUT_S = 30.0


class Child:
    """A benchmark subprocess spoken to in JSON lines over stdin/stdout."""

    def __init__(self, *args: str) -> None:
        self.name = args[0]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited ({self.proc.wait()}) without answering")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _floor_ms(snapshot: Snapshot, type_urls: tuple[str, ...], streams: int) -> float:
    """Milliseconds to build and serialize one SotW response per type for ``streams`` streams."""
    typed = [snapshot.get(url) for url in type_urls]
    started = time.perf_counter()
    for nonce in range(streams):
        for t in typed:
            discovery_pb2.DiscoveryResponse(
                version_info=t.version, type_url=t.type_url, nonce=str(nonce),
                resources=[r.packed for r in t.select(None)],
            ).SerializeToString()  # fmt: skip
    return (time.perf_counter() - started) * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Flip:
    """One weight change as seen by the clients and the server."""

    latencies_ms: list[float]  # per client, change → RDS received (inf: not within the deadline)
    cpu_ms: float  # server CPU from before the change to the last ACK
    last_ack_ms: float  # change → the server has every client's ACK


def _flip(server: Child, clients: Child, count: int) -> Flip:
    cpu_before = server.ask("stats")["cpu_s"]
    change = server.ask("flip")
    got = clients.ask(f"wait {change['version']} {change['changed_at']} {CONVERGE_TIMEOUT_S}")
    acked = server.ask(f"acked {change['version']} {count} {CONVERGE_TIMEOUT_S}")
    latencies = [(t - change["changed_at"]) * 1000 for t in got["times"]]
    latencies += [float("inf")] * (count - len(latencies))
    flip = Flip(
        latencies, (acked["cpu_s"] - cpu_before) * 1000, (acked["last_ack_at"] - change["changed_at"]) * 1000
    )
    print(
        f"  flip: rebuild+publish {(change['set_at'] - change['changed_at']) * 1000:.0f} ms, "
        f"{got['received']}/{count} received, p50 {_percentile(latencies, 0.5):.0f} ms, "
        f"max {max(latencies):.0f} ms, {acked['acked']} ACKed by {flip.last_ack_ms:.0f} ms, "
        f"server CPU {flip.cpu_ms:.0f} ms",
        file=sys.stderr,
    )
    return flip


def _measure(clients_n: int, channels: int, flips: int, mode: str = "") -> dict[str, Any]:
    """Server (``mode``: "", "--bare" or "--generate") and clients subprocesses: initial
    sync, then ``flips`` weight changes."""
    print(f"  server {mode or '(meshloop, hand-built snapshot)'}:", file=sys.stderr)
    server = Child("benchmarks.ads_server", *([mode] if mode else []))
    clients: Child | None = None
    try:
        info = server.read()
        clients = Child(
            "benchmarks.ads_clients", "--target", f"127.0.0.1:{info['port']}",
            "--clients", str(clients_n), "--channels", str(channels),
        )  # fmt: skip
        started = clients.read()["started"]
        initial = clients.ask(f"wait {info['version']} 0 {SYNC_TIMEOUT_S}")
        if initial["received"] < clients_n:
            raise RuntimeError(f"only {initial['received']}/{clients_n} clients synced in {SYNC_TIMEOUT_S} s")
        synced = server.ask(f"acked {info['version']} {clients_n} {CONVERGE_TIMEOUT_S}")
        sync_ms, sync_cpu_ms = (
            (max(initial["times"]) - started) * 1000,
            (synced["cpu_s"] - info["cpu_s"]) * 1000,
        )
        print(
            f"  initial sync: {clients_n} clients in {sync_ms:.0f} ms, server CPU {sync_cpu_ms:.0f} ms "
            f"(after start-up), client process CPU {initial['cpu_s']:.2f} s",
            file=sys.stderr,
        )
        runs = [_flip(server, clients, clients_n) for _ in range(flips)]
        stats, final = server.ask("stats"), clients.ask("stats")
        return {
            "initial_ms": sync_ms,
            "initial_cpu_ms": sync_cpu_ms,
            "latencies": [ms for run in runs for ms in run.latencies_ms],
            "within_worst": min(sum(1 for ms in run.latencies_ms if ms <= TARGET_MS) for run in runs),
            "flip_cpu_ms": statistics.median(run.cpu_ms for run in runs),
            "ack_ms": max(run.last_ack_ms for run in runs),
            "peak_rss_mib": stats["peak_rss_mib"],
            "client_errors": final["errors"] + clients_n - final["open"],
        }
    finally:
        if clients is not None:
            clients.stop()
        server.stop()


def run(
    clients: int = CLIENTS, channels: int = CHANNELS, flips: int = FLIPS, generate: bool = False
) -> list[Result]:
    """Start the server and the clients, sync, flip ``flips`` times; the figures beside baselines.
    ``generate``: meshloop translates the mesh (``meshloop.xds.generate``) instead of serving
    the hand-built snapshot (the floor always serves the hand-built one)."""
    snapshot = build(Mesh.make(200, 10, 3))
    rds_kib = sum(r.packed.ByteSize() for r in snapshot.get(ROUTE).by_name.values()) / 1024
    counts = ", ".join(f"{len(t.by_name)} {short_name(u)}" for u, t in snapshot.types.items() if t.by_name)
    rds_ms, all_ms = _floor_ms(snapshot, (ROUTE,), clients), _floor_ms(snapshot, PUSH_ORDER, clients)
    print(
        f"  mesh: {counts}; an RDS response is {rds_kib:.0f} KiB → {rds_kib * clients / 1024:.0f} MiB per "
        f"flip to {clients} clients; serializing them alone: {rds_ms:.0f} ms, all 4 types: {all_ms:.0f} ms",
        file=sys.stderr,
    )
    floor = _measure(clients, channels, flips, "--bare")
    m = _measure(clients, channels, flips, "--generate" if generate else "")
    if m["client_errors"] or floor["client_errors"]:
        print(
            f"  client streams failed: {m['client_errors']} (floor: {floor['client_errors']})",
            file=sys.stderr,
        )
    lat, n, target = m["latencies"], f"{clients} clients", ("target: all within", TARGET_MS)
    return [
        Result(f"ads_scale flip→RDS p50, {n}", _percentile(lat, 0.50), "ms", *target),
        Result(f"ads_scale flip→RDS p90, {n}", _percentile(lat, 0.90), "ms", "prod p90 low end", PROD_P90_MS),
        Result(f"ads_scale flip→RDS p99, {n}", _percentile(lat, 0.99), "ms", *target),
        Result(f"ads_scale flip→RDS max, {n}", max(lat), "ms", *target),
        Result(
            f"ads_scale flip→RDS p99, {n}",
            _percentile(lat, 0.99),
            "ms",
            "floor: BareAds p99",
            _percentile(floor["latencies"], 0.99),
        ),
        Result(
            "ads_scale clients updated ≤ 1 s (worst flip)", m["within_worst"], "clients", "clients", clients
        ),
        Result("ads_scale flip→last ACK at server (worst)", m["ack_ms"], "ms", *target),
        Result(
            "ads_scale server CPU per flip",
            m["flip_cpu_ms"],
            "CPU ms",
            "floor: BareAds",
            floor["flip_cpu_ms"],
        ),
        Result("ads_scale server peak RSS", m["peak_rss_mib"], "MiB", "target: under", RSS_LIMIT_MIB),
        Result(
            f"ads_scale initial sync, {n}", m["initial_ms"], "ms wall", "floor: BareAds", floor["initial_ms"]
        ),
        Result(
            "ads_scale server CPU, initial sync",
            m["initial_cpu_ms"],
            "CPU ms",
            "floor: BareAds",
            floor["initial_cpu_ms"],
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--channels", type=int, default=CHANNELS)
    parser.add_argument("--flips", type=int, default=FLIPS)
    parser.add_argument("--generate", action="store_true", help="meshloop translates the mesh config")
    args = parser.parse_args()
    print_table(run(args.clients, args.channels, args.flips, args.generate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
