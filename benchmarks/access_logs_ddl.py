"""What storing a row costs ClickHouse, by ``access_logs`` DDL variant (not in ``make bench``).

The same 100k decoded rows are inserted 6 times into a fresh table of each variant,
then ``OPTIMIZE TABLE … FINAL`` merges the 6 parts into one. Printed per 100k rows:
CPU seconds of the inserts, of the merge (one merge level), and the compressed size.
CPU is the whole process's (``time.process_time``: ClickHouse's threads included).

Run: ``.venv/bin/python -m benchmarks.access_logs_ddl [variant ...]``
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.accesslog_decode import STREAM, sample_payloads
from meshloop.collector.batch import ACCESS_LOGS, build_frames
from meshloop.collector.sources import Source
from meshloop.collector.wal_format import WalRecord
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.schema import access_logs_ddl

ROWS = 100_000
PARTS = 6


def _with_settings(ddl: str, extra: str) -> str:
    return ddl.replace("SETTINGS index_granularity = 8192", f"SETTINGS index_granularity = 8192, {extra}")


def _without_indexes(ddl: str) -> str:
    return re.sub(r",\n\)", "\n)", "\n".join(line for line in ddl.splitlines() if "INDEX " not in line))


def variants() -> dict[str, str]:
    base = access_logs_ddl("bench")[0]
    return {
        "as shipped": base,
        "no skip indexes": _without_indexes(base),
        "LZ4": base.replace("ZSTD(1)", "LZ4"),
        "String, not LowCardinality": base.replace("LowCardinality(String)", "String"),
        "horizontal merges": _with_settings(base, "enable_vertical_merge_algorithm = 0"),
        "compact parts": _with_settings(
            base, "min_bytes_for_wide_part = 1073741824, min_rows_for_wide_part = 100000000"
        ),
        "no automatic statistics": _with_settings(base, "auto_statistics_types = ''"),
    }


def main(names: list[str]) -> None:
    payloads = sample_payloads(entries=ROWS, start_ns=time.time_ns())
    meta = json.dumps(asdict(STREAM)).encode()
    records = [WalRecord(i, int(Source.ENVOY_ALS), time.time_ns(), meta, p) for i, p in enumerate(payloads)]
    frame = build_frames(records, "ddl", 3600 * 10**9).merged()[ACCESS_LOGS]
    store = EmbeddedStore(Path(tempfile.mkdtemp(prefix="meshloop-bench-ddl-")), database="default")
    per = 100_000 / (ROWS * PARTS)
    store.execute("CREATE DATABASE IF NOT EXISTS bench")  # warm-up: the first insert of a process is slower
    store.execute(variants()["as shipped"])
    store.insert_df("bench.access_logs", frame, dedup_token="warm-up")
    for name, ddl in variants().items():
        if names and name not in names:
            continue
        store.execute("DROP DATABASE IF EXISTS bench")
        store.execute("CREATE DATABASE bench")
        store.execute(ddl)
        started = time.process_time()
        for part in range(PARTS):
            store.insert_df("bench.access_logs", frame, dedup_token=f"p{part}")
        inserted = time.process_time()
        store.execute("OPTIMIZE TABLE bench.access_logs FINAL")
        merged = time.process_time()
        size = store.execute(
            "SELECT sum(data_compressed_bytes) FROM system.parts "
            "WHERE database = 'bench' AND table = 'access_logs' AND active"
        )
        print(
            f"{name:28s} insert {(inserted - started) * per:.3f} s  merge {(merged - inserted) * per:.3f} s  "
            f"size {int(size) / 2**20 / PARTS * (100_000 / ROWS):.2f} MiB per 100k rows",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
