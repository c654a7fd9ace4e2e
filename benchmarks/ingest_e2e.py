"""End-to-end ingest: Envoy ALS batches over gRPC → meshloop → ClickHouse (raw + windows).

A real ``meshloop up`` (embedded store) in a subprocess receives serialized
``StreamAccessLogsMessage`` batches (100 realistic entries of ~670 bytes each) on
several concurrent gRPC streams from this process; the figure ends when every entry
is queryable in ``access_logs``. Measured:

- entries/s for the whole machine (wall clock; the load generator shares the 2 cores);
- entries per CPU-second of the meshloop process (per core);
- peak RSS of a fresh meshloop process fed a steady 100k entries/s.

Baselines, measured in the same run on the same payloads:
(a) the obvious implementation — ``FromString`` into Python messages, field-by-field
    extraction into rows, DataFrame, insert into chdb — single thread;
(b) the ceiling — protobuf ``FromString`` alone, single thread.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2

from benchmarks.accesslog_decode import STREAM, sample_payloads
from benchmarks.harness import Result, bench_store, best_rate
from meshloop.accesslog.reference import decode_reference
from meshloop.store.migrations import migrate
from tests.integration.meshloop_process import MeshloopProcess, poll

UNIQUE_ENTRIES = 200_000
TOTAL_ENTRIES = 1_000_000
STREAMS = 4
STEADY_RATE = 100_000
STEADY_SECONDS = 15
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _identified(payload: bytes, stream: int) -> bytes:
    message = als_pb2.StreamAccessLogsMessage.FromString(payload)
    message.identifier.node.id = (
        f"sidecar~10.1.2.{stream}~productpage-v1-{stream}.default~default.svc.cluster.local"
    )
    message.identifier.node.metadata.update({"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default"})
    message.identifier.log_name = "meshloop_http"
    return message.SerializeToString()


def _send(port: int, payloads: list[bytes], rate_per_s: float | None) -> None:
    """One ALS stream; ``rate_per_s`` messages per second, or as fast as possible."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(
            "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
            request_serializer=None,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )

        def paced():
            start = time.perf_counter()
            for index, payload in enumerate(payloads):
                if rate_per_s:
                    delay = start + index / rate_per_s - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                yield payload

        call(paced(), timeout=600)


def _streams(payloads: list[bytes], total_messages: int) -> list[list[bytes]]:
    per_stream = total_messages // STREAMS
    out = []
    for stream in range(STREAMS):
        messages = [payloads[(stream * per_stream + i) % len(payloads)] for i in range(per_stream)]
        messages[0] = _identified(messages[0], stream)
        out.append(messages)
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_load(payloads: list[bytes], entries: int, rate: float | None) -> tuple[float, float, float]:
    """Start a fresh meshloop, send ``entries``; return (wall s, meshloop CPU s, peak RSS MiB)."""
    data = Path(tempfile.mkdtemp(prefix="meshloop-bench-ingest-"))
    per_message = 100
    with MeshloopProcess(data / "data") as meshloop:
        meshloop.wait_ready(120)
        pid = meshloop.proc.pid  # type: ignore[union-attr]
        streams = _streams(payloads, entries // per_message)
        expected = sum(len(s) for s in streams) * per_message
        cpu_before = _cpu_seconds(pid)
        started = time.perf_counter()
        per_stream_rate = rate / per_message / STREAMS if rate else None
        threads = [
            threading.Thread(target=_send, args=(meshloop.collector_port, s, per_stream_rate))
            for s in streams
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        poll(
            lambda: int(meshloop.query("SELECT count() FROM meshloop.access_logs")) >= expected,
            600,
            "all rows",
            0.1,
        )
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(pid) - cpu_before
        rss = _peak_rss_mib(pid)
        stored = int(meshloop.query("SELECT count() FROM meshloop.access_logs"))
        windows = int(meshloop.query("SELECT sum(Requests) FROM meshloop.access_log_windows"))
        meshloop.stop()
    if stored != expected or windows != expected:
        print(f"WARNING: expected {expected}, stored {stored} raw and {windows} in windows", file=sys.stderr)
    return wall, cpu, rss


def run() -> list[Result]:
    """Measure and return the end-to-end ingest figures."""
    payloads = sample_payloads(entries=UNIQUE_ENTRIES, start_ns=time.time_ns())

    store = bench_store("ingest_baseline")
    migrate(store, ttl_days=0)

    def obvious() -> int:
        done = 0
        for start in range(0, 200, 20):  # 20 messages (2,000 entries) per insert
            frame = decode_reference(payloads[start : start + 20], STREAM, batch_id="obvious")
            done += store.insert_df("access_logs", frame)
        return done

    def parse_only() -> int:
        parse = als_pb2.StreamAccessLogsMessage.FromString
        return sum(len(parse(p).http_logs.log_entry) for p in payloads)

    obvious_rate = best_rate(obvious, repeat=2)
    ceiling = best_rate(parse_only, repeat=3)
    wall, cpu, _ = _run_load(payloads, TOTAL_ENTRIES, None)
    _, _, rss = _run_load(payloads, STEADY_RATE * STEADY_SECONDS, STEADY_RATE)
    return [
        Result(
            "ingest e2e, whole machine (entries/s)",
            TOTAL_ENTRIES / wall,
            "entries/s",
            "obvious, 1 core",
            obvious_rate,
        ),
        Result(
            "ingest e2e, per meshloop core (entries/CPU-s)",
            TOTAL_ENTRIES / cpu,
            "entries/CPU-s",
            "obvious, 1 core",
            obvious_rate,
        ),
        Result(
            "ingest e2e, per meshloop core (entries/CPU-s) ",
            TOTAL_ENTRIES / cpu,
            "entries/CPU-s",
            "FromString alone, 1 core",
            ceiling,
        ),
        Result(f"peak RSS at {STEADY_RATE:,} entries/s (MiB)", rss, "MiB", "target 1024 MiB", 1024),
    ]


if __name__ == "__main__":
    from benchmarks.harness import print_table

    print_table(run())
