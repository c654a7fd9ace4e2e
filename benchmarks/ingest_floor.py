"""Where the ingest path's floor is: each stage's CPU per 100k entries, alone (not in ``make bench``).

The end-to-end benchmark (:mod:`benchmarks.ingest_e2e`) gives one figure for the whole
path. This one measures each stage in isolation, on the same payloads, and compares
their sum with what the issue's targets allow on this 2-core machine. 250k entries/s on
2 cores is 0.80 CPU-s per 100k for everything, the load generator included. 120k entries
per meshloop CPU-second is 0.83 CPU-s per 100k.

Stages:
- **ClickHouse, insert.** 100k decoded rows go into ``access_logs`` two ways: Arrow
  through chdb's ``Python()`` table function, and as a ``Native`` block, the way the
  embedded store inserts (:mod:`meshloop.store.native_format`; writing the block is
  included). Each is measured into a ``Null`` table (reading the format only) and into
  the real table (writing the part too). Merges are stopped.
- **ClickHouse, one merge level.** ``OPTIMIZE … FINAL`` of those 6 parts into one, per
  100k rows rewritten. A row is rewritten about log5(parts) times over its life.
- **ClickHouse, the windows insert.** A fixed cost per batch: 86 columns, two tables and
  the view that feeds the 1-minute table.
- **Decode.** ``build_frames``: the C reader, polars and the window partials.
- **gRPC intake.** A grpc.aio server with a handler that drops each message, against
  meshloop's own handlers: stream identity, WAL append with CRC32 (fsync every 100 ms),
  and the hand-off queue, with a thread that takes batches and commits them (reading
  spilled records back, deleting segments) as the flusher does, without decoding. Both
  run in a subprocess, fed by 4 streams of 100-entry messages. The CPU is the
  server's, all threads.

Run: ``.venv/bin/python -m benchmarks.ingest_floor``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import polars as pl

from benchmarks.accesslog_decode import STREAM, sample_payloads
from benchmarks.ingest_e2e import SPACING_NS, UNIQUE_ENTRIES, _cpu_seconds, _streams, send_streams
from meshloop.collector.batch import ACCESS_LOGS, WINDOWS, build_frames
from meshloop.collector.sources import Source
from meshloop.collector.wal_format import WalRecord
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate
from meshloop.store.schema import access_logs_ddl

ROWS = 100_000
PARTS = 6
INTAKE_ENTRIES = 1_000_000
BUDGET_WHOLE_MACHINE = 2 / 2.5  # CPU-s per 100k at 250k entries/s on 2 cores
BUDGET_PER_CORE = 1 / 1.2  # CPU-s per 100k at 120k entries per CPU-second


def _per_100k(seconds: float, rows: int) -> float:
    return seconds * 100_000 / rows


def _cpu(work: Callable[[], object], repeat: int) -> float:
    """Process CPU seconds of one ``work()`` call, averaged over ``repeat`` calls."""
    started = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - started) / repeat


def clickhouse(frame: pl.DataFrame, windows: pl.DataFrame) -> dict[str, float]:
    store = EmbeddedStore(Path(tempfile.mkdtemp(prefix="meshloop-bench-floor-")), database="meshloop")
    migrate(store)
    table = access_logs_ddl("bench")[0]
    lines = [line for line in table.splitlines() if "INDEX " not in line]
    without_indexes = re.sub(r",\n\)", "\n)", "\n".join(lines))
    null = re.sub(r"ENGINE = .*", "ENGINE = Null", without_indexes, flags=re.S)
    arrow = frame.to_arrow(compat_level=store.arrow_compat)
    store.execute("CREATE DATABASE bench")
    store.execute(table)
    store.insert_df("bench.access_logs", frame, dedup_token="warm-up")  # a process' first insert is slower
    out: dict[str, float] = {}
    tokens = iter(range(10**9))
    for name, ddl in (("Null table", null), ("access_logs", table)):
        for fmt in ("Arrow via Python()", "Native (as meshloop inserts: the block written, then sent)"):
            store.execute("DROP DATABASE bench SYNC")
            store.execute("CREATE DATABASE bench")
            store.execute(ddl)
            if ddl is table:
                store.execute("SYSTEM STOP MERGES bench.access_logs")

            def insert(fmt: str = fmt) -> None:
                # The same rows each time: each insert gets its own deduplication token, or
                # ClickHouse drops the repeats as duplicates of the first block (chdb's
                # send_insert ignores ``SETTINGS insert_deduplicate = 0``).
                token = {"insert_deduplication_token": f"{fmt[:5]}{next(tokens)}"}
                if fmt.startswith("Native"):
                    store._insert_arrow("bench.access_logs", arrow, token)
                else:
                    store._insert_through_python("bench.access_logs", arrow, token)

            out[f"ClickHouse: {fmt} into the {name}"] = _per_100k(_cpu(insert, PARTS), ROWS)
    if int(store.execute("SELECT count() FROM system.parts WHERE database = 'bench' AND active")) != PARTS:
        raise AssertionError(f"expected {PARTS} parts to merge")
    merge = _cpu(lambda: _merge_into_one_part(store, "bench", "access_logs"), 1)
    out["ClickHouse: one merge level (per 100k rows rewritten)"] = _per_100k(merge, ROWS * PARTS)
    per_batch = _cpu(lambda: store.insert_df(WINDOWS, windows, dedup_token=f"w{next(tokens)}"), 10)
    out[f"ClickHouse: windows insert, per batch ({windows.height} rows)"] = per_batch
    store.close()
    return out


def _merge_into_one_part(store: EmbeddedStore, database: str, table: str) -> None:
    """Start merges, merge every part into one, wait until ClickHouse is done with them."""
    store.execute(f"SYSTEM START MERGES {database}.{table}")
    parts = f"SELECT count() FROM system.parts WHERE database = '{database}' AND table = '{table}' AND active"
    deadline = time.monotonic() + 300
    while int(store.execute(parts)) > 1:
        # A background merge may already hold some parts: OPTIMIZE then merges nothing.
        store.execute(f"OPTIMIZE TABLE {database}.{table} FINAL")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{database}.{table} still has more than one part")
        time.sleep(0.05)


_SERVER = """
import asyncio, sys, tempfile, threading
from pathlib import Path
import grpc
from meshloop.collector.intake import Intake
from meshloop.collector.servicers import generic_handlers
from meshloop.collector.streams import StreamRegistry
from meshloop.collector.wal import WriteAheadLog

async def main(mode):
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    if mode == "meshloop":
        wal = WriteAheadLog.open(Path(tempfile.mkdtemp()) / "wal", max_total_bytes=4 << 30)
        intake = Intake(wal)

        def drain():  # the flusher's part of the WAL's life: take a batch, commit it
            while True:
                intake.wakeup.wait(0.5)
                intake.wakeup.clear()
                records = intake.take(64 << 20)
                if records:
                    wal.commit(records[-1].seq)

        threading.Thread(target=drain, daemon=True).start()
        server.add_generic_rpc_handlers(generic_handlers(intake, StreamRegistry()))
    else:
        async def drop(requests, context):
            async for _ in requests:
                pass
            return b""
        handler = grpc.stream_unary_rpc_method_handler(drop, response_serializer=bytes)
        service = grpc.method_handlers_generic_handler(
            "envoy.service.accesslog.v3.AccessLogService", {"StreamAccessLogs": handler})
        server.add_generic_rpc_handlers([service])
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    await server.start()
    await server.wait_for_termination()

asyncio.run(main(sys.argv[1]))
"""


def intake(payloads: list[bytes], mode: str) -> float:
    """Server CPU seconds per 100k entries for ``mode`` ("drop" or "meshloop")."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, mode], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        streams = _streams(payloads, INTAKE_ENTRIES // 100)
        before = _cpu_seconds(server.pid)
        send_streams(port, streams)
        return _per_100k(_cpu_seconds(server.pid) - before, INTAKE_ENTRIES)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    payloads = sample_payloads(entries=ROWS, start_ns=time.time_ns(), spacing_ns=SPACING_NS)
    meta = json.dumps(asdict(STREAM)).encode()
    records = [WalRecord(i, int(Source.ENVOY_ALS), time.time_ns(), meta, p) for i, p in enumerate(payloads)]
    build_frames(records, "warm-up", 3600 * 10**9)
    decode = _cpu(lambda: build_frames(records, "floor", 3600 * 10**9), 3)
    merged = build_frames(records, "floor", 3600 * 10**9).merged()
    figures = clickhouse(merged[ACCESS_LOGS], merged[WINDOWS])
    figures["decode (build_frames: C reader, polars, window partials)"] = decode
    e2e_payloads = sample_payloads(entries=UNIQUE_ENTRIES, start_ns=time.time_ns(), spacing_ns=SPACING_NS)
    figures["gRPC intake: grpc.aio, messages dropped"] = intake(e2e_payloads, "drop")
    figures["gRPC intake: meshloop's handlers (identity, WAL, queue)"] = intake(e2e_payloads, "meshloop")
    width = max(len(name) for name in figures)
    print(f"{'stage':<{width}}  CPU-s per 100k entries")
    for name, seconds in figures.items():
        print(f"{name:<{width}}  {seconds:6.3f}")
    floor = (
        figures["ClickHouse: Native (as meshloop inserts: the block written, then sent) into the access_logs"]
        + figures["decode (build_frames: C reader, polars, window partials)"]
        + figures["gRPC intake: meshloop's handlers (identity, WAL, queue)"]
    )
    print(
        f"sum of insert + decode + intake (no merges, no windows insert): {floor:.3f}; "
        f"budget at 250k/s on 2 cores {BUDGET_WHOLE_MACHINE:.3f} (load generator included), "
        f"at 120k per CPU-second {BUDGET_PER_CORE:.3f}"
    )


if __name__ == "__main__":
    main()
