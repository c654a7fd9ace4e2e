"""1-second per-edge windows of access-log entries: pure polars functions.

A *partial* is one row per (``Window`` second, edge) with counts, bytes, a duration sum
and a fixed-bound latency histogram (:data:`HISTOGRAM_BOUNDS_MS`), computed from one
batch. Partials of the same key add up (:func:`merge_partials`), across batches and
collectors alike, which is what ``access_log_windows`` (a ``SummingMergeTree``, see
:func:`meshloop.store.schema.access_log_windows_ddl`) does on merge. The column
names and ClickHouse types are those of that table (the DDL is the one source).

Which second a request belongs to: the second in which it **completed**
(``Timestamp + Duration``), as Istio's ``istio_requests_total`` and Envoy's stats count
a request when its stream ends. With the completion time, lateness measures only
delivery delay (``arrival - completion``), so a window is complete — and can be final —
``lateness`` after it ends, whatever the requests' durations. Keyed by start time, every
request longer than the lateness would be late by construction (a 30 s download would
never be in its window) and a window's latency histogram would be biased towards short
requests until long after it closed.

Latency histogram: bucket ``i`` counts durations ``d`` with
``bound[i-1] < d <= bound[i]`` (Prometheus ``le``); bounds are 0.5 ms × 2^(k/4),
k = 0..68, rounded to µs (0.5 ms … 65.536 s), and a last +Inf bucket: 70 buckets. A
quantile interpolated in a bucket lies in the same bucket as the exact (nearest-rank)
quantile, so its error is at most the bucket's width: ≤ 19 % of the value above 0.5 ms,
≤ 0.5 ms below it; above 65.536 s the answer is 65.536 s. (Bounds 2^(1/2) apart would
halve the columns but allow 41 %: a true p99 of 400 ms could read 512 ms, enough to
fail a 500 ms canary gate.)

Entry types that are not a request's end (``DownstreamPeriodic``, ``TcpPeriodic``,
``DownstreamStart``, ...: Envoy's ``AccessLogType``) are skipped: counting them would
count one request several times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import polars as pl

from meshloop.store.schema import (
    LATENCY_BOUNDS_US,
    LATENCY_BUCKET_COLUMNS,
    WINDOW_EDGE_COLUMNS,
    WINDOW_VALUE_COLUMNS,
)

__all__ = [
    "BUCKET_COLUMNS",
    "EDGE_COLUMNS",
    "HISTOGRAM_BOUNDS_MS",
    "HISTOGRAM_BOUNDS_NS",
    "KEY_COLUMNS",
    "OpenWindows",
    "VALUE_COLUMNS",
    "WINDOW_NS",
    "WINDOW_SCHEMA",
    "WindowStep",
    "bucket_of",
    "empty_partials",
    "merge_partials",
    "quantile_from_buckets",
    "step_windows",
    "window_partials",
]

WINDOW_NS = 1_000_000_000
HISTOGRAM_BOUNDS_NS: tuple[int, ...] = tuple(b * 1000 for b in LATENCY_BOUNDS_US)
"""Finite bucket upper bounds in ns (exact integers: what assignment compares against)."""
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = tuple(b / 1000 for b in LATENCY_BOUNDS_US)
"""The same bounds in ms, for people and SQL: 0.5, 0.595, 0.707, 0.841, 1.0, ... 65536.0."""
BUCKET_COLUMNS: tuple[str, ...] = LATENCY_BUCKET_COLUMNS
EDGE_COLUMNS: tuple[str, ...] = tuple(name for name, _t, _c in WINDOW_EDGE_COLUMNS)
KEY_COLUMNS: tuple[str, ...] = ("Window", *EDGE_COLUMNS)
VALUE_COLUMNS: tuple[str, ...] = tuple(name for name, _t, _c in WINDOW_VALUE_COLUMNS)

_DTYPES: dict[str, pl.DataType] = {
    "LowCardinality(String)": pl.String(),
    "UInt8": pl.UInt8(),
    "Bool": pl.Boolean(),
    "UInt64": pl.UInt64(),
}
WINDOW_SCHEMA: pl.Schema = pl.Schema(
    [("Window", pl.Datetime("ns"))]
    + [(name, _DTYPES[type_]) for name, type_, _c in (*WINDOW_EDGE_COLUMNS, *WINDOW_VALUE_COLUMNS)]
)
"""Columns and dtypes of a partials frame, in ``access_log_windows`` column order."""

# AccessLogType values that are not the end of a request/connection/session.
_NOT_FINAL = (
    "TcpUpstreamConnected", "TcpPeriodic", "DownstreamStart", "DownstreamPeriodic",
    "UpstreamPoolReady", "UpstreamPeriodic", "DownstreamTunnelSuccessfullyEstablished",
    "UdpTunnelUpstreamConnected", "UdpPeriodic",
)
_BOUNDS = pl.Series("bounds", HISTOGRAM_BOUNDS_NS, dtype=pl.UInt64)
_BUCKETS = len(BUCKET_COLUMNS)
_EDGE_SOURCES = tuple(c for c in EDGE_COLUMNS if c not in ("ResponseClass", "HasResponseFlags"))
_BYTES_IN = ("RequestHeadersBytes", "RequestBodyBytes", "TcpReceivedBytes")
_BYTES_OUT = ("ResponseHeadersBytes", "ResponseBodyBytes", "TcpSentBytes")
_NEEDED = ("AccessLogType", "ResponseCode", "ResponseFlags", "Duration", *_EDGE_SOURCES,
           *_BYTES_IN, *_BYTES_OUT)


def empty_partials() -> pl.DataFrame:
    """A partials frame with no rows."""
    return WINDOW_SCHEMA.to_frame()


def bucket_of(duration_ns: pl.Expr) -> pl.Expr:
    """The histogram bucket index (0..69, UInt32) of each duration in ns."""
    return pl.lit(_BOUNDS).search_sorted(duration_ns.cast(pl.UInt64), side="left")


def window_partials(
    df: pl.DataFrame, arrival_ns: int | pl.Series, lateness_ns: int
) -> tuple[pl.DataFrame, int]:
    """Partials of an ``access_logs`` frame, and how many of its entries were late.

    ``arrival_ns`` is when the rows reached the collector (one int for the batch, or
    one value per row). An entry is late when ``arrival_ns - (Timestamp + Duration)
    > lateness_ns``: it is left out of the partials and counted (the caller still
    stores it raw). Entries that do not end a request are neither (module docstring).
    Output: :data:`WINDOW_SCHEMA`, one row per (``Window``, edge), sorted by key.
    """
    if lateness_ns < 0:
        raise ValueError(f"lateness_ns must be >= 0, got {lateness_ns}")
    if isinstance(arrival_ns, pl.Series) and arrival_ns.len() != df.height:
        raise ValueError(f"arrival_ns has {arrival_ns.len()} values for {df.height} rows")
    end = pl.col("Timestamp").cast(pl.Int64) + pl.col("Duration").cast(pl.Int64)
    rows = (
        df.lazy()
        .select(*_NEEDED, _end=end, _arrival=pl.lit(arrival_ns).cast(pl.Int64))
        .filter(~pl.col("AccessLogType").is_in(_NOT_FINAL))
        .with_columns(_late=(pl.col("_arrival") - pl.col("_end")) > lateness_ns)
    )
    frame = rows.collect()
    late = int(frame.get_column("_late").sum())
    return _aggregate(frame.filter(~pl.col("_late")) if late else frame).cast(WINDOW_SCHEMA), late


def _aggregate(rows: pl.DataFrame) -> pl.DataFrame:
    """Partials of on-time rows: one ``group_by`` for the counts and sums, which also
    gathers each group's bucket indexes; the 70 histogram columns are then one
    ``numpy.bincount`` over ``group × 70 + bucket``. (Measured on 100k sample rows:
    0.020 CPU-s, against 0.032 for one boolean sum per bucket and group.)"""
    code = pl.col("ResponseCode")
    grouped = rows.group_by(
        (pl.col("_end") // WINDOW_NS * WINDOW_NS).cast(pl.Datetime("ns")).alias("Window"),
        *_EDGE_SOURCES,
        (code // 100).clip(upper_bound=9).cast(pl.UInt8).alias("ResponseClass"),
        (pl.col("ResponseFlags").list.len() > 0).alias("HasResponseFlags"),
    ).agg(
        pl.len().alias("Requests"),
        ((code >= 500) & (code < 600)).sum().alias("Errors5xx"),
        ((code >= 400) & (code < 500)).sum().alias("Errors4xx"),
        pl.sum_horizontal(*_BYTES_IN).sum().alias("BytesIn"),
        pl.sum_horizontal(*_BYTES_OUT).sum().alias("BytesOut"),
        pl.col("Duration").sum().alias("DurationSumNs"),
        bucket_of(pl.col("Duration")).alias("_buckets"),
    )
    buckets = grouped.get_column("_buckets")
    per_group = buckets.list.len().to_numpy()
    group = np.repeat(np.arange(grouped.height, dtype=np.int64), per_group)
    cell = group * _BUCKETS + buckets.explode().to_numpy().astype(np.int64)
    histogram = np.bincount(cell, minlength=grouped.height * _BUCKETS).reshape(-1, _BUCKETS)
    counts = pl.DataFrame(histogram.astype(np.uint64), schema=list(BUCKET_COLUMNS), orient="row")
    return (
        pl.concat([grouped.drop("_buckets"), counts], how="horizontal")
        .select(WINDOW_SCHEMA.names())
        .sort(KEY_COLUMNS)
    )


def merge_partials(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Sum partials of the same (``Window``, edge) key; the result is sorted by key.

    Associative and commutative: merging partials of any split of a batch (or of the
    batches of several collectors) equals the partials of the whole.
    """
    parts = [f for f in frames if f.height]
    if not parts:
        return empty_partials()
    return (
        pl.concat(parts, how="vertical")
        .group_by(KEY_COLUMNS)
        .agg(pl.col(VALUE_COLUMNS).sum())
        .select(WINDOW_SCHEMA.names())
        .sort(KEY_COLUMNS)
        .cast(WINDOW_SCHEMA)
    )


def quantile_from_buckets(counts: Sequence[int], q: float) -> float:
    """The ``q`` quantile in ms of a histogram over :data:`HISTOGRAM_BOUNDS_MS`.

    Prometheus' ``histogram_quantile`` rule: rank ``q × total``; the first non-empty
    bucket whose cumulative count reaches the rank; linear interpolation between its
    lower and upper bound (0 below the first). The +Inf bucket answers its lower bound.
    ``nan`` for an empty histogram. The SQL twin is
    :func:`meshloop.store.schema.latency_quantile_sql`.
    """
    if len(counts) != len(BUCKET_COLUMNS):
        raise ValueError(f"expected {len(BUCKET_COLUMNS)} bucket counts, got {len(counts)}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    rank = q * sum(counts)
    cumulative = 0
    for index, count in enumerate(counts):
        cumulative += count
        if count > 0 and cumulative >= rank:
            low = HISTOGRAM_BOUNDS_MS[index - 1] if index else 0.0
            high = HISTOGRAM_BOUNDS_MS[index] if index < len(HISTOGRAM_BOUNDS_MS) else low
            return low + (high - low) * (rank - (cumulative - count)) / count
    return math.nan


@dataclass(frozen=True)
class OpenWindows:
    """The state of live windowing: windows still open, and which are final.

    Every window starting before ``final_before_ns`` is final (published, never
    changed again). ``windows`` maps each open window's start (ns) to its merged
    partials, so a step merges only the windows its batch touches: its cost follows the
    batch, not (open seconds × edges) — with 1,000 edges and a 120 s lateness, one frame
    of all open windows cost 128 ms per step to re-merge, this 3 ms.
    """

    windows: Mapping[int, pl.DataFrame] = field(default_factory=lambda: MappingProxyType({}))
    final_before_ns: int = 0

    @property
    def frame(self) -> pl.DataFrame:
        """Every open window's partials in one frame, sorted by key."""
        if not self.windows:
            return empty_partials()
        return pl.concat([self.windows[start] for start in sorted(self.windows)], how="vertical")

    @property
    def rows(self) -> int:
        """How many (window, edge) rows are open."""
        return sum(frame.height for frame in self.windows.values())


@dataclass(frozen=True)
class WindowStep:
    """What :func:`step_windows` returns: the new state, the windows that became final
    (sorted by key; empty when none), and the requests that came too late for theirs."""

    state: OpenWindows
    final: pl.DataFrame
    late_requests: int


_START = "_window_start_ns"


def step_windows(
    state: OpenWindows, partials: pl.DataFrame, now_ns: int, lateness_ns: int
) -> WindowStep:
    """Merge ``partials`` into the open windows, then finalize what ``now_ns`` closes.

    A window ``[w, w + 1 s)`` is final once ``w + 1 s + lateness_ns <= now_ns``; the
    watermark never moves back (a ``now_ns`` behind an earlier one finalizes nothing).
    Partials of already-final windows are not merged: their ``Requests`` are counted as
    late. When ``now_ns`` is the clock the arrivals of :func:`window_partials` were read
    from, no entry it judged on time lands in a final window (its window ends after
    ``arrival - lateness``), so the two rules agree. Pure: no clock, no I/O; ``state``
    is not changed.
    """
    watermark = max(state.final_before_ns, (now_ns - lateness_ns) // WINDOW_NS * WINDOW_NS)
    start = pl.col("Window").cast(pl.Int64)
    stale = partials.filter(start < state.final_before_ns)
    late = int(stale.get_column("Requests").sum()) if stale.height else 0
    fresh = partials.filter(start >= state.final_before_ns) if stale.height else partials
    windows = dict(state.windows)
    if fresh.height:
        by_window = fresh.with_columns(start.alias(_START)).partition_by(_START, as_dict=True)
        for (window_start,), part in by_window.items():
            assert isinstance(window_start, int)
            earlier = windows.get(window_start)
            part = part.drop(_START)
            windows[window_start] = merge_partials([part] if earlier is None else [earlier, part])
    closed = sorted(window_start for window_start in windows if window_start < watermark)
    final = pl.concat([windows.pop(w) for w in closed], how="vertical") if closed else empty_partials()
    return WindowStep(OpenWindows(MappingProxyType(windows), watermark), final, late)
