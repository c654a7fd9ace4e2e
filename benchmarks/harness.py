"""A tiny benchmark harness: best-of-N timing and a ratio table."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshloop.store.embedded import EmbeddedStore


@dataclass(frozen=True)
class Result:
    """One figure and the baseline it is read against."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


def best_rate(
    work: Callable[[], int], repeat: int = 3, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Run ``work`` (returns items done) ``repeat`` times; the best items per second of
    ``clock`` (wall-clock by default)."""
    best = 0.0
    for _ in range(repeat):
        start = clock()
        done = work()
        best = max(best, done / (clock() - start))
    return best


def best_cpu_rate(work: Callable[[], int], repeat: int = 3) -> float:
    """:func:`best_rate` per CPU-second of this process (all its threads, so ClickHouse's
    inside chdb too) instead of per wall-clock second."""
    return best_rate(work, repeat, time.process_time)


def print_table(results: list[Result]) -> None:
    """Print each figure beside its baseline and their ratio."""
    width = max(len(r.name) for r in results)
    bwidth = max(len(r.baseline_name) for r in results)
    print(f"{'benchmark':<{width}}  {'value':>14}  {'baseline':<{bwidth}}  {'baseline value':>14}  ratio")
    for r in results:
        print(
            f"{r.name:<{width}}  {r.value:>14,.0f}  {r.baseline_name:<{bwidth}}  "
            f"{r.baseline_value:>14,.0f}  {r.ratio:5.2f}  ({r.unit})"
        )


_STORE_PATH: Path | None = None


def bench_store(database: str) -> EmbeddedStore:
    """An embedded store for in-process baselines. chdb opens one path per process, so
    every benchmark shares one temporary directory, each in its own database."""
    global _STORE_PATH
    if _STORE_PATH is None:
        _STORE_PATH = Path(tempfile.mkdtemp(prefix="meshloop-bench-"))
    return EmbeddedStore(_STORE_PATH, database=database)
