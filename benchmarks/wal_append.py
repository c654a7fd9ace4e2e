"""WAL append throughput beside plain ``os.write`` of the same bytes.

``WriteAheadLog.append`` (CRC32, header, lock, ``pwritev``, segment rotation, and the
default 100 ms background fsync running) against the baseline: one ``os.write`` per
record of the same framed bytes into one file, no fsync. Payloads of 1 KiB (many
small Envoy access-log messages) and 64 KiB (a large OTLP export). Only the append
loop is timed: opening, the final fsync in ``close`` and cleanup are not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from benchmarks.harness import Result
from meshloop.collector.wal import WriteAheadLog
from meshloop.collector.wal_format import HEADER_SIZE

META = b'{"node":"sidecar~10.0.0.1~pod-7f9c.default~default.svc.cluster.local","cluster":"reviews"}' * 2
CASES = ((1024, 100_000), (64 * 1024, 2_000))  # (payload bytes, records per run)


def _best_loop_rate(
    setup: Callable[[Path], AbstractContextManager[Callable[[], object]]], records: int
) -> float:
    """Best of 3 runs of ``records`` calls (records/s); setup and teardown untimed."""
    best = 0.0
    for _ in range(3):
        directory = Path(tempfile.mkdtemp(prefix="meshloop-bench-wal-"))
        try:
            with setup(directory) as call:
                start = time.perf_counter()
                for _ in range(records):
                    call()
                best = max(best, records / (time.perf_counter() - start))
        finally:
            shutil.rmtree(directory)
    return best


def _wal_rate(payload: bytes, records: int) -> float:
    @contextmanager
    def setup(directory: Path) -> Iterator[Callable[[], object]]:
        with WriteAheadLog.open(directory, max_total_bytes=4 << 30) as wal:
            yield lambda: wal.append(1, META, payload, 0)

    return _best_loop_rate(setup, records)


def _write_rate(framed: bytes, records: int) -> float:
    @contextmanager
    def setup(directory: Path) -> Iterator[Callable[[], object]]:
        fd = os.open(directory / "raw", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            yield lambda: os.write(fd, framed)
        finally:
            os.close(fd)

    return _best_loop_rate(setup, records)


def run() -> list[Result]:
    """Measure and return the WAL append figures."""
    results = []
    for size, records in CASES:
        payload = os.urandom(size)
        framed = bytes(HEADER_SIZE) + META + payload
        wal_records = _wal_rate(payload, records)
        raw_records = _write_rate(framed, records)
        wal_mb, raw_mb = wal_records * len(framed) / 1e6, raw_records * len(framed) / 1e6
        label = f"{size // 1024} KiB"
        results.append(Result(f"WAL append {label} (MB/s)", wal_mb, "MB/s", "os.write", raw_mb))
        results.append(
            Result(f"WAL append {label} (records/s)", wal_records, "records/s", "os.write", raw_records)
        )
    return results


if __name__ == "__main__":
    from benchmarks.harness import print_table

    print_table(run())
