"""Migrations against the real ClickHouse engine (chdb).

Each test gets its own database on the session's one chdb path (``embedded_store`` in
``tests/conftest.py``; chdb opens one data path per process).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from meshloop.errors import SchemaTooNew
from meshloop.store.base import Store
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate, migrations
from tests.unit.test_schema import (
    OTEL_LOGS_COLUMNS,
    OTEL_TRACE_ID_TS_COLUMNS,
    OTEL_TRACES_COLUMNS,
)

pytestmark = pytest.mark.integration

LATEST = migrations("latest")[-1].version

EXPECTED_TABLES = {
    "access_logs": "MergeTree",
    "otel_logs": "MergeTree",
    "otel_traces": "MergeTree",
    "otel_traces_trace_id_ts": "AggregatingMergeTree",
    "otel_traces_trace_id_ts_mv": "MaterializedView",
    "otel_metrics_gauge": "MergeTree",
    "otel_metrics_sum": "MergeTree",
    "otel_metrics_histogram": "MergeTree",
    "otel_metrics_exponential_histogram": "MergeTree",
    "otel_metrics_summary": "MergeTree",
    "access_log_windows": "SummingMergeTree",
    "access_log_windows_1m": "SummingMergeTree",
    "access_log_windows_1m_mv": "MaterializedView",
    "xds_events": "MergeTree",
    "mesh_changes": "MergeTree",
    "schema_migrations": "ReplacingMergeTree",
}


def top_level_split(text: str) -> list[str]:
    """Split ``text`` at the commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    return [*parts, text[start:].strip()]


def flattened(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Columns as ``system.columns`` shows them: each Nested field an Array column."""
    out = []
    for name, kind in columns:
        if not kind.startswith("Nested("):
            out.append((name, kind))
            continue
        for field in top_level_split(kind[len("Nested(") : -1]):
            sub_name, sub_kind = field.split(" ", 1)
            out.append((f"{name}.{sub_name}", f"Array({sub_kind})"))
    return out


def tables(store: Store) -> dict[str, str]:
    rows = store.query_rows(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}",
        {"db": store.database},
    )
    return dict(rows)


def columns(store: Store, table: str) -> list[tuple[str, str]]:
    rows = store.query_rows(
        "SELECT name, type FROM system.columns WHERE database = {db:String} "
        "AND table = {t:String} ORDER BY position",
        {"db": store.database, "t": table},
    )
    return [(name, type_) for name, type_ in rows]


def test_migrate_creates_every_table(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    messages: list[str] = []
    report = migrate(store, progress=messages.append)
    assert report.applied == tuple(range(1, LATEST + 1))
    assert (report.previous_version, report.version) == (0, LATEST)
    assert tables(store) == EXPECTED_TABLES
    assert messages == [
        "applying migration 1 (access logs)",
        "applying migration 2 (otel tables)",
        "applying migration 3 (otel metrics)",
        "applying migration 4 (access log windows)",
        "applying migration 5 (xds events)",
        "applying migration 6 (mesh changes)",
    ]
    recorded = store.query_rows(
        f"SELECT version, name, checksum FROM {store.database}.schema_migrations FINAL ORDER BY version"
    )
    assert recorded == [(m.version, m.name, m.checksum) for m in migrations(store.database)]


def test_otel_columns_in_system_columns_match_the_exporter(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store)
    assert columns(store, "otel_logs") == OTEL_LOGS_COLUMNS
    assert columns(store, "otel_traces") == flattened(OTEL_TRACES_COLUMNS)
    assert columns(store, "otel_traces_trace_id_ts") == OTEL_TRACE_ID_TS_COLUMNS
    gauge = dict(columns(store, "otel_metrics_gauge"))
    assert gauge["Exemplars.TraceId"] == "Array(String)"
    assert gauge["TimeUnix"] == "DateTime"


def test_second_migrate_applies_and_changes_nothing(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store, ttl_days=7)
    before_tables = store.query_rows(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = {db:String} ORDER BY name",
        {"db": store.database},
    )
    before_rows = store.query_rows(f"SELECT count() FROM {store.database}.schema_migrations")
    report = migrate(store, ttl_days=7)
    assert report.applied == ()
    assert (report.previous_version, report.version) == (LATEST, LATEST)
    after_tables = store.query_rows(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = {db:String} ORDER BY name",
        {"db": store.database},
    )
    assert after_tables == before_tables
    after_rows = store.query_rows(f"SELECT count() FROM {store.database}.schema_migrations")
    assert after_rows == before_rows == [(LATEST,)]


def test_a_newer_schema_is_refused(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store)
    store.command(
        f"INSERT INTO {store.database}.schema_migrations (version, name, checksum, applied_at) "
        "SELECT {v:UInt32}, 'from the future', '', now64(3)",
        {"v": 99},
    )
    with pytest.raises(SchemaTooNew) as excinfo:
        migrate(store)
    message = str(excinfo.value)
    assert f"database {store.database} is at schema version 99" in message
    assert f"knows only up to {LATEST}; upgrade meshloop" in message


def test_missing_migrations_are_applied_in_order(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    store.command(f"CREATE DATABASE IF NOT EXISTS {store.database}")
    for statement in migrations(store.database)[0].statements:
        store.command(statement)
    migrate(store)  # records 1..4; the existing access_logs is left as it is
    assert tables(store) == EXPECTED_TABLES


def test_trace_id_has_a_bloom_filter_index(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store)
    rows = store.query_rows(
        "SELECT table, type_full FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND expr = 'TraceId' ORDER BY table",
        {"db": store.database},
    )
    assert rows == [
        ("access_logs", "bloom_filter(0.001)"),
        ("otel_logs", "bloom_filter(0.001)"),
        ("otel_traces", "bloom_filter(0.001)"),
    ]


def _access_log_row() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "Timestamp": [dt.datetime(2026, 11, 1, 12, 0, 0, 123456)],
            "LogKind": ["http"],
            "DestinationService": ["reviews.default.svc.cluster.local"],
            "ResponseCode": [503],
            "ResponseFlags": [["UF", "URX"]],
            "TraceId": ["4bf92f3577b34da6a3ce929d0e0e4736"],
            "RequestId": ["req-1"],
            "BatchId": ["batch-1"],
            "TimeToFirstUpstreamRxByte": [None],
        },
        schema_overrides={
            "Timestamp": pl.Datetime("ns"),
            "ResponseCode": pl.UInt16,
            "TimeToFirstUpstreamRxByte": pl.UInt64,
        },
    )


def test_access_log_insert_with_the_same_token_is_kept_once(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store)
    row = _access_log_row()
    assert store.insert_df("access_logs", row, dedup_token="batch-1") == 1
    store.insert_df("access_logs", row, dedup_token="batch-1")
    store.insert_df("access_logs", row, dedup_token="batch-2")
    result = store.query_rows(
        f"SELECT count(), any(ResponseFlags), any(TimeToFirstUpstreamRxByte) "
        f"FROM {store.database}.access_logs"
    )
    assert result == [(2, ["UF", "URX"], None)]


def test_grafana_style_trace_query_uses_the_lookup_table(embedded_store: EmbeddedStore) -> None:
    store = embedded_store
    migrate(store)
    db = store.database
    store.command(
        f"INSERT INTO {db}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, "
        "SpanKind, ServiceName, Duration, StatusCode) VALUES "
        "('2026-11-01 12:00:00.000000001', 'abc123', 's1', '', 'GET /', 'Server', 'front', "
        "5000000, 'Ok'), "
        "('2026-11-01 12:00:02.500000000', 'abc123', 's2', 's1', 'GET /r', 'Client', 'front', "
        "1000000, 'Ok'), "
        "('2026-11-01 13:00:00', 'other', 's3', '', 'GET /', 'Server', 'back', 1, 'Ok')"
    )
    lookup = store.query_rows(
        f"SELECT toString(min(Start)), toString(max(End)) FROM {db}.otel_traces_trace_id_ts "
        "WHERE TraceId = {t:String}",
        {"t": "abc123"},
    )
    assert lookup == [("2026-11-01 12:00:00", "2026-11-01 12:00:02")]
    # The shape of the query Grafana's ClickHouse data source sends for a trace id.
    spans = store.query_rows(
        "WITH {t:String} AS trace_id, "
        f"(SELECT min(Start) FROM {db}.otel_traces_trace_id_ts WHERE TraceId = trace_id) "
        "AS trace_start, "
        f"(SELECT max(End) + 1 FROM {db}.otel_traces_trace_id_ts WHERE TraceId = trace_id) "
        "AS trace_end "
        "SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, "
        "ServiceName AS serviceName, SpanName AS operationName, "
        "multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime, "
        "multiply(Duration, 0.000001) AS duration, "
        "arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), "
        "mapKeys(SpanAttributes)) AS tags "
        f"FROM {db}.otel_traces "
        "WHERE traceID = trace_id AND Timestamp >= trace_start AND Timestamp <= trace_end "
        "AND Duration > 0 ORDER BY Timestamp, Duration DESC",
        {"t": "abc123"},
    )
    assert [(s[1], s[2], s[6]) for s in spans] == [("s1", "", 5.0), ("s2", "s1", 1.0)]
