"""End-to-end ingest: Envoy ALS batches over gRPC → meshloop → ClickHouse (raw + windows).

A real ``meshloop up`` (embedded store) in a subprocess receives serialized
``StreamAccessLogsMessage`` batches (100 realistic entries of ~670 bytes each) on
several concurrent gRPC streams from this process (one asyncio client); the figure ends when every entry
is queryable in ``access_logs``. Measured:

- entries/s for the whole machine (wall clock; the load generator shares the 2 cores,
  and its CPU seconds are printed);
- entries per CPU-second of the meshloop process (per core);
(both the median of three fresh runs, one with ``--quick``);
- peak RSS of a fresh meshloop process fed a steady 100k entries/s, and its entries per
  CPU-second there (ClickHouse's merges catch up during a steady run, less in a burst);
- where meshloop's CPU went, per thread group (``/proc/<pid>/task/*/stat``).

The payloads' entries start within one second (5 µs apart, as at 200k requests/s),
at the time they are generated, as live traffic would. They are generated once and
replayed, so they age during the run: meshloop runs with ``--window-lateness 120`` so
that none is late (the default 5 s would make the replays late and leave them out of
the windows).

``--quick`` measures only the end-to-end figures (no in-process baselines).

Baselines, measured in the same run on the same payloads:
(a) the obvious implementation — ``FromString`` into Python messages, field-by-field
    extraction into rows, DataFrame, insert into chdb — single thread;
(b) the ceiling — protobuf ``FromString`` alone, single thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
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
FAST_RUNS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LATENESS_S = 120
SPACING_NS = 5_000
_THREAD_NUMBER = re.compile(r"[-_:]?\d+$")


def _identified(payload: bytes, stream: int) -> bytes:
    message = als_pb2.StreamAccessLogsMessage.FromString(payload)
    message.identifier.node.id = (
        f"sidecar~10.1.2.{stream}~productpage-v1-{stream}.default~default.svc.cluster.local"
    )
    message.identifier.node.metadata.update({"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default"})
    message.identifier.log_name = "meshloop_http"
    return message.SerializeToString()


METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


async def _stream(channel: grpc.aio.Channel, payloads: list[bytes], rate_per_s: float | None) -> None:
    """One ALS stream; ``rate_per_s`` messages per second, or as fast as possible."""
    call = channel.stream_unary(METHOD, request_serializer=None, response_deserializer=None)(timeout=600)
    start = time.perf_counter()
    for index, payload in enumerate(payloads):
        if rate_per_s:
            delay = start + index / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await call.write(payload)
    await call.done_writing()
    await call


def send_streams(port: int, streams: list[list[bytes]], rate_per_stream: float | None = None) -> None:
    """Send each of ``streams`` as one ALS stream, all at once; return when all are done.

    One asyncio client: it costs about half the CPU of a thread per stream on the
    synchronous gRPC client (1M entries: ~0.6 against ~1.2 CPU-s, measured against a
    server that drops the messages), and the load generator shares the machine.
    """

    async def send_all() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.gather(*(_stream(channel, s, rate_per_stream) for s in streams))

    asyncio.run(send_all())


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


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group (the OS thread name without its trailing number)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = _THREAD_NUMBER.sub("", stat[stat.index("(") + 1 : stat.rindex(")")]) or "?"
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def _cpu_split(before: dict[str, float], after: dict[str, float], total: float) -> str:
    """The groups' shares of ``total``; threads that ended during the run are "exited"."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    spent["exited"] = total - sum(spent.values())
    total = total or 1.0
    top = sorted(spent.items(), key=lambda item: -item[1])
    shown = [f"{name} {cpu:.1f}s ({cpu / total:.0%})" for name, cpu in top[:8] if cpu >= 0.05]
    return ", ".join(shown)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stored(meshloop: MeshloopProcess) -> int:
    return int(meshloop.query("SELECT count() FROM meshloop.access_logs"))


def _windowed(meshloop: MeshloopProcess) -> int:
    return int(meshloop.query("SELECT sum(Requests) FROM meshloop.access_log_windows"))


def _run_load(payloads: list[bytes], entries: int, rate: float | None) -> tuple[float, float, float]:
    """Start a fresh meshloop, send ``entries``; return (wall s, meshloop CPU s, peak RSS MiB)."""
    data = Path(tempfile.mkdtemp(prefix="meshloop-bench-ingest-"))
    per_message = 100
    with MeshloopProcess(data / "data", extra=["--window-lateness", str(LATENESS_S)]) as meshloop:
        meshloop.wait_ready(120)
        pid = meshloop.proc.pid  # type: ignore[union-attr]
        streams = _streams(payloads, entries // per_message)
        expected = sum(len(s) for s in streams) * per_message
        cpu_before, threads_before = _cpu_seconds(pid), _thread_cpu(pid)
        load_cpu_before = time.process_time()  # this process: the load generator
        started = time.perf_counter()
        send_streams(meshloop.collector_port, streams, rate / per_message / STREAMS if rate else None)
        load_cpu = time.process_time() - load_cpu_before
        poll(lambda: _stored(meshloop) >= expected, 600, "all rows", 0.1)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(pid) - cpu_before
        split = _cpu_split(threads_before, _thread_cpu(pid), cpu)
        rss = _peak_rss_mib(pid)
        stored = _stored(meshloop)
        # A batch's windows are inserted right after its rows: wait for them too.
        deadline = time.monotonic() + 30
        while (windows := _windowed(meshloop)) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        meshloop.stop()
    if stored != expected or windows != expected:
        print(f"WARNING: expected {expected}, stored {stored} raw and {windows} in windows", file=sys.stderr)
    pace = f"{rate:,.0f}/s" if rate else "as fast as possible"
    print(
        f"{entries:,} entries ({pace}): {wall:.1f} s wall, {cpu:.1f} s meshloop CPU, "
        f"{load_cpu:.1f} s load-generator CPU, peak RSS {rss:,.0f} MiB; CPU by thread: {split}",
        file=sys.stderr,
    )
    return wall, cpu, rss


def run(quick: bool = False) -> list[Result]:
    """Measure and return the end-to-end ingest figures (``quick``: no baselines)."""
    payloads = sample_payloads(entries=UNIQUE_ENTRIES, start_ns=time.time_ns(), spacing_ns=SPACING_NS)
    obvious_rate, ceiling = (float("nan"), float("nan")) if quick else _baselines(payloads)
    # The machine is shared and noisy: the median of FAST_RUNS fresh runs (one if quick).
    runs = [_run_load(payloads, TOTAL_ENTRIES, None) for _ in range(1 if quick else FAST_RUNS)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    _, steady_cpu, rss = _run_load(payloads, STEADY_RATE * STEADY_SECONDS, STEADY_RATE)
    return _results(wall, cpu, rss, obvious_rate, ceiling) + [
        Result(
            f"ingest at a steady {STEADY_RATE:,}/s, per meshloop core (entries/CPU-s)",
            STEADY_RATE * STEADY_SECONDS / steady_cpu,
            "entries/CPU-s",
            "target per core",
            120_000,
        )
    ]


def _baselines(payloads: list[bytes]) -> tuple[float, float]:
    """(obvious implementation, FromString alone), entries/s on one core."""
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

    return best_rate(obvious, repeat=2), best_rate(parse_only, repeat=3)


def _results(wall: float, cpu: float, rss: float, obvious_rate: float, ceiling: float) -> list[Result]:
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

    print_table(run(quick="--quick" in sys.argv[1:]))
