"""The window tables on the real ClickHouse engine (chdb): merging, replays, rollup, SQL
percentiles. Each test gets a fresh database (``embedded_store``, tests/conftest.py)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from meshloop.accesslog.windows import (
    BUCKET_COLUMNS,
    EDGE_COLUMNS,
    WINDOW_NS,
    merge_partials,
    quantile_from_buckets,
    window_partials,
)
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate
from meshloop.store.schema import latency_quantile_sql
from tests.unit.test_windows import T0, direct_totals, random_access_logs

pytestmark = pytest.mark.integration

S = WINDOW_NS
SUMS = ["Requests", "Errors5xx", "Errors4xx", "BytesIn", "BytesOut", "DurationSumNs"]
ON_TIME = 10**15  # a lateness no generated entry exceeds


def totals(store: EmbeddedStore, table: str) -> dict[str, int]:
    sums = ", ".join(f"sum({c}) AS {c}" for c in SUMS)
    row = store.query_df(f"SELECT {sums} FROM {store.database}.{table}").row(0, named=True)
    return {k: int(v) for k, v in row.items()}


def by_key(store: EmbeddedStore, table: str) -> pl.DataFrame:
    """The table's rows summed by key (merges are eventual), as a partials frame."""
    keys = ", ".join(["Window", *EDGE_COLUMNS])
    sums = ", ".join(f"sum({c}) AS {c}" for c in [*SUMS, *BUCKET_COLUMNS])
    df = store.query_df(
        f"SELECT {keys}, {sums} FROM {store.database}.{table} GROUP BY {keys} ORDER BY {keys}"
    )
    # chdb's Arrow output carries DateTime as UInt32 seconds.
    return df.with_columns(pl.from_epoch("Window", time_unit="s").cast(pl.Datetime("ns")))


def as_stored(partials: pl.DataFrame, minute: bool = False) -> pl.DataFrame:
    """Partials as the 1 s (or the 1 min) table would sum them."""
    if minute:
        partials = partials.with_columns(pl.col("Window").dt.truncate("1m"))
    merged = merge_partials([partials])
    return merged.with_columns(pl.col("Window").cast(pl.Datetime("ns")))


def _same(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert got.columns == expected.columns
    assert got.cast(expected.schema).equals(expected)


def test_windows_tables_exist_with_their_engines(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store, ttl_days=0)  # T0 is a fixed past date: no TTL to drop it
    rows = dict(
        store.query_rows(
            "SELECT name, engine FROM system.tables WHERE database = {db:String} "
            "AND name LIKE 'access_log_windows%'",
            {"db": store.database},
        )
    )
    assert rows == {
        "access_log_windows": "SummingMergeTree",
        "access_log_windows_1m": "SummingMergeTree",
        "access_log_windows_1m_mv": "MaterializedView",
    }


def test_replayed_batch_is_counted_once_in_both_tables(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store, ttl_days=0)  # T0 is a fixed past date: no TTL to drop it
    first, _ = window_partials(random_access_logs(3000, seed=1, span_s=130), T0, ON_TIME)
    second, _ = window_partials(random_access_logs(3000, seed=2, span_s=130), T0, ON_TIME)
    store.insert_df("access_log_windows", first, dedup_token="batch-1")
    store.insert_df("access_log_windows", first, dedup_token="batch-1")  # replay
    store.insert_df("access_log_windows", second, dedup_token="batch-2")
    store.insert_df("access_log_windows", first, dedup_token="batch-1")  # replay again
    both = merge_partials([first, second])
    _same(by_key(store, "access_log_windows"), as_stored(both))
    _same(by_key(store, "access_log_windows_1m"), as_stored(both, minute=True))
    minutes = store.query_rows(
        f"SELECT countIf(toSecond(Window) != 0) FROM {store.database}.access_log_windows_1m"
    )
    assert minutes == [(0,)]
    store.command(f"OPTIMIZE TABLE {store.database}.access_log_windows FINAL")
    _same(by_key(store, "access_log_windows"), as_stored(both))
    stored_rows = store.query_rows(f"SELECT count() FROM {store.database}.access_log_windows")
    assert stored_rows == [(both.height,)]  # merged to one row per key


def test_identical_partials_with_distinct_tokens_both_count(embedded_store: EmbeddedStore) -> None:
    """Two collectors can send the very same partials; only a repeated token dedups."""
    store = embedded_store
    migrate(store, ttl_days=0)  # T0 is a fixed past date: no TTL to drop it
    partials, _ = window_partials(random_access_logs(500, seed=5), T0, ON_TIME)
    store.insert_df("access_log_windows", partials, dedup_token="collector-a-1")
    store.insert_df("access_log_windows", partials, dedup_token="collector-b-1")
    expected = partial_sums(partials)
    assert totals(store, "access_log_windows") == {k: 2 * v for k, v in expected.items()}
    assert totals(store, "access_log_windows_1m") == {k: 2 * v for k, v in expected.items()}


def partial_sums(partials: pl.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in partials.select(pl.col(SUMS).sum()).row(0, named=True).items()}


def test_windows_summed_in_sql_equal_direct_aggregation(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store, ttl_days=0)  # T0 is a fixed past date: no TTL to drop it
    df = random_access_logs(50_000, seed=7, span_s=200)
    for i, batch in enumerate(df.iter_slices(12_000)):
        partials, late = window_partials(batch, T0, ON_TIME)
        assert late == 0
        store.insert_df("access_log_windows", partials, dedup_token=f"b{i}")
    assert totals(store, "access_log_windows") == direct_totals(df)
    assert totals(store, "access_log_windows_1m") == direct_totals(df)
    # Per completion minute and destination, against polars straight on the raw rows.
    final = df.filter(pl.col("AccessLogType").is_in(["DownstreamEnd", "TcpConnectionEnd"]))
    end = pl.col("Timestamp").cast(pl.Int64) + pl.col("Duration").cast(pl.Int64)
    direct = (
        final.group_by(Minute=(end // (60 * S)) * 60, Dest=pl.col("DestinationService"))
        .agg(
            pl.len().alias("n"),
            (pl.col("ResponseCode") >= 500).sum().alias("e5"),
            pl.col("Duration").sum().alias("d"),
        )
        .sort("Minute", "Dest")
    )
    stored = store.query_df(
        "SELECT toUnixTimestamp(Window) AS Minute, DestinationService AS Dest, "
        "sum(Requests) AS n, sum(Errors5xx) AS e5, sum(DurationSumNs) AS d "
        f"FROM {store.database}.access_log_windows_1m GROUP BY Minute, Dest ORDER BY Minute, Dest"
    )
    assert stored.rows() == direct.rows()


@pytest.mark.parametrize("table", ["access_log_windows", "access_log_windows_1m"])
def test_sql_percentiles_match_the_python_helper(embedded_store: EmbeddedStore, table: str) -> None:
    store = embedded_store
    migrate(store, ttl_days=0)  # T0 is a fixed past date: no TTL to drop it
    df = random_access_logs(20_000, seed=11, span_s=180)
    partials, _ = window_partials(df, T0, ON_TIME)
    store.insert_df("access_log_windows", partials, dedup_token="p1")
    start, end = T0 // S + 30, T0 // S + 150
    quantiles = (0.0, 0.5, 0.9, 0.99, 1.0)
    columns = ", ".join(f"{latency_quantile_sql(q, 'h')} AS q{i}" for i, q in enumerate(quantiles))
    got = store.query_df(
        f"SELECT DestinationService, SourceWorkload, sumForEach(LatencyBuckets) AS h, {columns} "
        f"FROM {store.database}.{table} "
        "WHERE Window >= toDateTime({start:UInt32}) AND Window < toDateTime({end:UInt32}) "
        "GROUP BY DestinationService, SourceWorkload ORDER BY DestinationService, SourceWorkload",
        {"start": start, "end": end},
    )
    in_range = as_stored(partials, minute=table.endswith("_1m")).filter(
        pl.col("Window").cast(pl.Int64).is_between(start * S, end * S, closed="left")
    )
    expected = (
        in_range.group_by("DestinationService", "SourceWorkload")
        .agg(pl.col(BUCKET_COLUMNS).sum())
        .sort("DestinationService", "SourceWorkload")
    )
    assert got.height == expected.height > 1
    for row, want in zip(got.iter_rows(named=True), expected.iter_rows(named=True), strict=True):
        counts = [int(want[c]) for c in BUCKET_COLUMNS]
        assert row["h"] == counts
        for i, q in enumerate(quantiles):
            assert row[f"q{i}"] == pytest.approx(quantile_from_buckets(counts, q), rel=1e-9)


def test_sql_percentile_of_an_empty_histogram_is_nan(embedded_store: EmbeddedStore) -> None:
    empty = "CAST([" + ", ".join(["0"] * len(BUCKET_COLUMNS)) + "], 'Array(UInt64)')"
    inf_only = "CAST([" + ", ".join(["0"] * (len(BUCKET_COLUMNS) - 1) + ["5"]) + "], 'Array(UInt64)')"
    (row,) = embedded_store.query_rows(
        f"SELECT {latency_quantile_sql(0.5, empty)}, {latency_quantile_sql(0.99, inf_only)}"
    )
    assert math.isnan(row[0]) and row[1] == 65536.0
