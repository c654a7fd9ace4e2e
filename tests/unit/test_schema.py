"""Pure checks of the DDL text: cluster rewriting, TTL, identifiers, the OTel shapes."""

from __future__ import annotations

import re

import pytest

from meshloop.store import schema, schema_otel
from meshloop.store.migrations import migrations, render_cluster_sql

# Column (name, type) lists read off the exporter's templates
# (opentelemetry-collector-contrib exporter/clickhouseexporter/internal/sqltemplates,
# text/template generation, Map-typed variant). Kept here, independent of the module.
OTEL_LOGS_COLUMNS = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "LowCardinality(String)"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("LogAttributes", "Map(LowCardinality(String), String)"),
    ("EventName", "String"),
    ("__otel_materialized_k8s.cluster.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.container.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.deployment.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.namespace.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.node.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.pod.name", "LowCardinality(String)"),
    ("__otel_materialized_k8s.pod.uid", "LowCardinality(String)"),
    ("__otel_materialized_deployment.environment.name", "LowCardinality(String)"),
]
MAP = "Map(LowCardinality(String), String)"
OTEL_TRACES_COLUMNS = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", MAP),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", MAP),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events", f"Nested(Timestamp DateTime64(9), Name LowCardinality(String), Attributes {MAP})"),
    ("Links", f"Nested(TraceId String, SpanId String, TraceState String, Attributes {MAP})"),
    ("ResourceAttributeItems", "Array(String)"),
    ("SpanAttributeItems", "Array(String)"),
]
OTEL_TRACE_ID_TS_COLUMNS = [
    ("TraceId", "String"),
    ("Start", "SimpleAggregateFunction(min, DateTime)"),
    ("End", "SimpleAggregateFunction(max, DateTime)"),
]

_STOP = re.compile(r" (CODEC|COMMENT|MATERIALIZED|ALIAS|DEFAULT)\b")


def columns_of(ddl: str) -> list[tuple[str, str]]:
    """(name, type) of each column definition in one CREATE TABLE statement."""
    body = ddl[ddl.index("(\n") + 2 : ddl.rindex("\n)")]
    out = []
    for raw in body.split(",\n"):
        line = raw.strip()
        if line.startswith("INDEX "):
            continue
        match = re.match(r"`([^`]+)`|(\S+)", line)
        assert match is not None
        name = match.group(1) or match.group(2)
        rest = line[match.end() :].strip()
        stop = _STOP.search(" " + rest)
        out.append((name, (" " + rest)[: stop.start()].strip() if stop else rest))
    return out


def indexes_of(ddl: str) -> list[str]:
    return re.findall(r"INDEX (.+?)(?:,\n|\n\))", ddl)


def test_otel_logs_columns_match_the_exporter() -> None:
    (ddl,) = schema_otel.otel_logs_ddl("db", None, 30)
    assert columns_of(ddl) == OTEL_LOGS_COLUMNS


def test_otel_logs_keys_codecs_and_indexes_match_the_exporter() -> None:
    (ddl,) = schema_otel.otel_logs_ddl("db", None, 0)
    assert "PARTITION BY toDate(Timestamp)" in ddl
    assert "ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)" in ddl
    assert (
        "`Timestamp` DateTime64(9) COMMENT 'Event timestamp with nanosecond precision' "
        "CODEC(Delta(8), ZSTD(1))" in ddl
    )
    assert "MATERIALIZED ResourceAttributes['k8s.pod.uid']" in ddl
    assert indexes_of(ddl) == [
        "idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
        "idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "idx_lower_body lower(Body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8",
    ]


def test_otel_traces_columns_and_keys_match_the_exporter() -> None:
    traces, lookup, view = schema_otel.otel_traces_ddl("db", None, 30)
    assert columns_of(traces) == OTEL_TRACES_COLUMNS
    assert "PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))" in traces
    assert "ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)" in traces
    assert "Duration UInt64 CODEC(T64, ZSTD(1))" in traces
    assert columns_of(lookup) == OTEL_TRACE_ID_TS_COLUMNS
    assert "ENGINE = AggregatingMergeTree()" in lookup
    assert "PARTITION BY toStartOfWeek(Start)" in lookup
    assert view.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS db.otel_traces_trace_id_ts_mv")
    assert "TO db.otel_traces_trace_id_ts\n" in view
    assert "FROM db.otel_traces\n" in view


def test_otel_metrics_tables_and_shared_columns() -> None:
    ddls = schema_otel.otel_metrics_ddl("db", None, 30)
    names = [re.search(r"db\.(\w+)", d).group(1) for d in ddls]  # type: ignore[union-attr]
    assert names == [
        "otel_metrics_gauge",
        "otel_metrics_sum",
        "otel_metrics_histogram",
        "otel_metrics_exponential_histogram",
        "otel_metrics_summary",
    ]
    for ddl in ddls:
        cols = dict(columns_of(ddl))
        assert cols["MetricName"] == "LowCardinality(String)"
        assert cols["TimeUnix"] == "DateTime"
        assert cols["Attributes"] == MAP
        assert "cityHash64(Attributes), TimeUnix)" in ddl
    assert dict(columns_of(ddls[1]))["IsMonotonic"] == "Boolean"
    assert dict(columns_of(ddls[3]))["PositiveBucketCounts"] == "Array(UInt64)"


def test_access_logs_has_the_required_columns_keys_and_indexes() -> None:
    (ddl,) = schema.access_logs_ddl("db", None, 30)
    cols = dict(columns_of(ddl))
    assert cols["Timestamp"] == "DateTime64(9)"
    assert cols["ResponseCode"] == "UInt16"
    assert cols["ResponseFlags"] == "Array(LowCardinality(String))"
    assert cols["TimeToFirstUpstreamRxByte"] == "Nullable(UInt64)"
    assert cols["BatchId"] == "String"
    for name in ("TraceId", "RequestId", "SourcePrincipal", "DestinationService", "TlsSni"):
        assert name in cols
    assert "idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1" in indexes_of(ddl)
    assert "ORDER BY (DestinationService, toStartOfMinute(Timestamp), Timestamp)" in ddl
    assert "non_replicated_deduplication_window = 10000" in ddl


@pytest.mark.parametrize(
    ("ttl_days", "expected"),
    [(30, "TTL toDateTime(Timestamp) + toIntervalDay(30)"), (7, "toIntervalDay(7)"), (0, None)],
)
def test_ttl_on_and_off(ttl_days: int, expected: str | None) -> None:
    everything = "\n".join(s for m in migrations("db", None, ttl_days) for s in m.statements)
    if expected is None:
        assert "TTL " not in everything
    else:
        assert expected in everything
        # every MergeTree table carries one TTL clause
        tables = [s for m in migrations("db", None, ttl_days) for s in m.statements if "ENGINE = " in s]
        assert all("TTL " in s for s in tables)


def test_single_node_ddl_has_no_cluster_parts() -> None:
    text = render_cluster_sql("db", "c1", 30)
    assert "ON CLUSTER" in text
    single = "\n".join(s for m in migrations("db", None, 30) for s in m.statements)
    for word in ("ON CLUSTER", "Replicated", "Distributed", "_local"):
        assert word not in single


def test_cluster_ddl_is_replicated_and_distributed() -> None:
    statements = [s for m in migrations("meshdb", "prod", 30) for s in m.statements]
    assert all(" ON CLUSTER prod" in s.splitlines()[0] for s in statements)
    local = [s for s in statements if "ENGINE = Replicated" in s]
    distributed = [s for s in statements if "ENGINE = Distributed" in s]
    assert len(local) == len(distributed) == 13
    (access_local,) = [s for s in local if "meshdb.access_logs_local" in s]
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/meshdb/access_logs_local', "
        "'{replica}')" in access_local
    )
    assert "replicated_deduplication_window = 10000" in access_local
    assert "non_replicated" not in access_local
    (access_dist,) = [s for s in distributed if "meshdb.access_logs ON" in s]
    assert "AS meshdb.access_logs_local" in access_dist
    assert "Distributed('prod', 'meshdb', 'access_logs_local', cityHash64(" in access_dist
    (traces_dist,) = [s for s in distributed if "meshdb.otel_traces ON" in s]
    assert traces_dist.endswith("cityHash64(TraceId))")
    lookup = [s for s in local if "otel_traces_trace_id_ts_local" in s]
    assert "ReplicatedAggregatingMergeTree(" in lookup[0]


def test_cluster_view_reads_and_writes_local_tables() -> None:
    view = schema_otel.otel_traces_ddl("meshdb", "prod", 30)[-1]
    assert "otel_traces_trace_id_ts_mv ON CLUSTER prod" in view
    assert "TO meshdb.otel_traces_trace_id_ts_local\n" in view
    assert "FROM meshdb.otel_traces_local\n" in view


def test_render_sql_without_a_cluster_is_the_single_node_schema() -> None:
    text = render_cluster_sql("meshdb", None, 30)
    assert "CREATE DATABASE IF NOT EXISTS meshdb;" in text
    assert "ON CLUSTER" not in text and "Distributed" not in text
    assert text.count("CREATE TABLE IF NOT EXISTS") == 1 + 13


def test_render_cluster_sql_includes_bootstrap_and_every_migration() -> None:
    text = render_cluster_sql("meshdb", "prod", 14)
    assert text.startswith("-- meshloop schema: bootstrap")
    assert "CREATE DATABASE IF NOT EXISTS meshdb ON CLUSTER prod;" in text
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/all/meshdb/schema_migrations'" in text
    for migration in migrations("meshdb", "prod", 14):
        assert f"-- migration {migration.version}: {migration.name}" in text
    assert text.count("CREATE TABLE IF NOT EXISTS") == 1 + 26
    assert "toIntervalDay(14)" in text


@pytest.mark.parametrize(
    ("database", "cluster"),
    [("bad-name", None), ("db; DROP TABLE x", None), ("1db", None), ("db", "c 1"), ("db", "c'"), ("", None)],
)
def test_bad_identifiers_are_rejected(database: str, cluster: str | None) -> None:
    with pytest.raises(ValueError, match="not a plain identifier"):
        schema.access_logs_ddl(database, cluster, 30)
    with pytest.raises(ValueError):
        render_cluster_sql(database, cluster or "c", 30)


@pytest.mark.parametrize("ttl_days", [-1, 1.5, True])
def test_bad_ttl_is_rejected(ttl_days: object) -> None:
    with pytest.raises(ValueError, match="ttl_days"):
        schema_otel.otel_logs_ddl("db", None, ttl_days)  # type: ignore[arg-type]


def test_migration_versions_strictly_increase_and_checksums_differ() -> None:
    found = migrations("db", None, 30)
    assert [m.version for m in found] == [1, 2, 3, 4, 5, 6]
    assert len({m.checksum for m in found}) == 6
    assert found[0].checksum != migrations("db", None, 7)[0].checksum
    assert all(s.startswith("CREATE") and "IF NOT EXISTS" in s for m in found for s in m.statements)
