"""Store insert throughput: meshloop's store paths beside raw chdb.

- ``EmbeddedStore.insert_df``: our embedded path (checks, metrics, lock, the Native
  block of :mod:`meshloop.store.native_format`) vs the baseline ``INSERT ... SELECT
  FROM Python(arrow)`` called on chdb directly — per wall-clock second (chdb reads
  Arrow on several threads; the Native block is written on one) and per CPU-second.
- ``ServerStore.insert_df`` over the ClickHouse HTTP interface (clickhouse-connect,
  Native format, real HTTP on loopback) vs the same baseline.
"""

from __future__ import annotations

import asyncio
import threading

import polars as pl

from benchmarks.harness import Result, bench_store, best_cpu_rate, best_rate
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.server import ServerStore

ROWS = 1_000_000
DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.bench (ts DateTime64(9), service LowCardinality(String), "
    "code UInt16, duration_ns UInt64, path String) ENGINE = MergeTree ORDER BY (service, ts)"
)


def sample_frame(rows: int) -> pl.DataFrame:
    """Access-log-like rows: a timestamp, a low-cardinality service, codes, paths."""
    n = pl.int_range(0, rows, dtype=pl.UInt64, eager=True)
    return pl.DataFrame({"n": n}).select(
        ts=pl.lit(1_764_000_000_000_000_000, dtype=pl.Int64)
        .add(pl.col("n").cast(pl.Int64) * 1000)
        .cast(pl.Datetime("ns")),
        service=pl.format("svc-{}", pl.col("n") % 50),
        code=(200 + (pl.col("n") % 7) * 50).cast(pl.UInt16),
        duration_ns=(pl.col("n") * 7919) % 1_000_000_000,
        path=pl.format("/api/v1/items/{}", pl.col("n") % 10_000),
    )


def _serve_http(store: EmbeddedStore, ready: threading.Event, box: dict[str, int]) -> None:
    from meshloop.api.clickhouse_http import ClickHouseAuth, start_clickhouse_http

    async def serve() -> None:
        _, box["port"] = await start_clickhouse_http(store, ClickHouseAuth(), "127.0.0.1", 0)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


def run() -> list[Result]:
    """Measure and return the store insert figures."""
    frame = sample_frame(ROWS)
    arrow_batch = frame.to_arrow()  # noqa: F841 - read by name inside ClickHouse (Python())
    store = bench_store("bench")
    store.command(DDL.format(db="bench"))
    session = store._session  # the baseline talks to chdb directly

    def baseline() -> int:
        session.query(
            "INSERT INTO bench.bench (ts, service, code, duration_ns, path) "
            "SELECT ts, service, code, duration_ns, path FROM Python(arrow_batch)"
        )
        return ROWS

    def embedded() -> int:
        return store.insert_df("bench", frame)

    ready, box = threading.Event(), {}
    threading.Thread(target=_serve_http, args=(store, ready, box), daemon=True).start()
    assert ready.wait(30)
    server = ServerStore(f"http://127.0.0.1:{box['port']}", database="bench")

    def over_http() -> int:
        return server.insert_df("bench", frame)

    base = best_rate(baseline)
    embedded_rate = best_rate(embedded)
    # CPU of the inserts alone: background merges of earlier parts would count too.
    store.command("SYSTEM STOP MERGES bench.bench")
    base_cpu, embedded_cpu = best_cpu_rate(baseline), best_cpu_rate(embedded)
    store.command("SYSTEM START MERGES bench.bench")
    results = [
        Result("store insert, embedded (rows/s)", embedded_rate, "rows/s", "chdb Python() insert", base),
        Result(
            "store insert, embedded (rows/CPU-s)",
            embedded_cpu,
            "rows/CPU-s",
            "chdb Python() insert",
            base_cpu,
        ),
        Result(
            "store insert, HTTP interface (rows/s)",
            best_rate(over_http),
            "rows/s",
            "chdb Python() insert",
            base,
        ),
    ]
    server.close()
    store.close()
    return results
