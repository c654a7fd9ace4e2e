"""DDL of the OpenTelemetry Collector ClickHouse exporter's tables, for OTLP data.

``otel_logs``, ``otel_traces`` (+ ``otel_traces_trace_id_ts`` and its view) and
``otel_metrics_*``, with the exporter's column names, types, codecs, skip indexes,
partitioning and sort keys, so that Grafana's ClickHouse data source (OTel mode) reads
them unchanged. Rendering (single node or cluster) is shared with :mod:`meshloop.store.schema`.

Where the OTel shapes come from: ``exporter/clickhouseexporter/internal/sqltemplates`` of
open-telemetry/opentelemetry-collector-contrib, the Go ``text/template`` generation
(v0.151+; ``embed.go`` @ 243924c1e90c, ``traces_table.sql`` @ 2bf6b9e1f8c8,
``traces_id_ts_lookup_table.sql`` @ 1b08503058e5, ``logs_table.sql`` of the same
generation: no ``TimestampTime``, ``EventName`` column, ``__otel_materialized_*`` columns,
``ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)``), and for metrics
``metrics_sum_table.sql`` @ 0d21cdd34de6 / ``metrics_exp_histogram_table.sql`` @ 469a40cec1e7
(``DateTime`` times, ``LowCardinality`` metric name, hour-bucketed sort key). Written here
from those, not copied. Choices the exporter makes at run time:

- the default Map-typed attribute columns, not the opt-in JSON variant;
- the ``bloom_filter``/``tokenbf_v1`` index branch (``HasFullTextSearch = false``), not the
  ``text(...)`` index branch the exporter renders only for servers with full-text indexes,
  so the same DDL runs on older cluster servers too;
- the trace-id lookup table's ``{{.Engine}}`` is rendered as ``AggregatingMergeTree``, the
  engine its ``SimpleAggregateFunction(min|max, DateTime)`` columns are made for.
"""

from __future__ import annotations

from meshloop.store.schema import (
    _LC,
    OTEL_LOGS,
    OTEL_METRICS_EXP_HISTOGRAM,
    OTEL_METRICS_GAUGE,
    OTEL_METRICS_HISTOGRAM,
    OTEL_METRICS_SUM,
    OTEL_METRICS_SUMMARY,
    OTEL_TRACES,
    OTEL_TRACES_TRACE_ID_TS,
    OTEL_TRACES_TRACE_ID_TS_MV,
    Target,
    _lines,
    _render,
    _Table,
)

_MAP = "Map(LowCardinality(String), String)"


def _map_indexes(*columns: tuple[str, str]) -> list[str]:
    """The exporter's key/value bloom filters on Map columns (``idx_<prefix>_key|value``)."""
    out = []
    for prefix, column in columns:
        out.append(f"INDEX idx_{prefix}_key mapKeys({column}) TYPE bloom_filter(0.01) GRANULARITY 1")
        out.append(
            f"INDEX idx_{prefix}_value mapValues({column}) TYPE bloom_filter(0.01) GRANULARITY 1"
        )
    return out


_K8S_MATERIALIZED = (
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.deployment.name",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "deployment.environment.name",
)

_OTEL_LOGS_COLUMNS = (
    ("Timestamp", "DateTime64(9)", "Event timestamp with nanosecond precision", "Delta(8), ZSTD(1)"),
    ("TraceId", "String", "W3C trace identifier", "ZSTD(1)"),
    ("SpanId", "String", "W3C span identifier", "ZSTD(1)"),
    ("TraceFlags", "UInt8", "W3C trace flags", None),
    ("SeverityText", _LC, "Log severity as text", "ZSTD(1)"),
    ("SeverityNumber", "UInt8", "Log severity as number (1-24)", None),
    ("ServiceName", _LC, "Service that emitted the log", "ZSTD(1)"),
    ("Body", "String", "Log message body", "ZSTD(1)"),
    ("ResourceSchemaUrl", _LC, "Schema URL for the resource", "ZSTD(1)"),
    ("ResourceAttributes", _MAP, "Resource attributes as key-value pairs", "ZSTD(1)"),
    ("ScopeSchemaUrl", _LC, "Schema URL for the instrumentation scope", "ZSTD(1)"),
    ("ScopeName", "String", "Instrumentation scope name", "ZSTD(1)"),
    ("ScopeVersion", _LC, "Instrumentation scope version", "ZSTD(1)"),
    ("ScopeAttributes", _MAP, "Instrumentation scope attributes", "ZSTD(1)"),
    ("LogAttributes", _MAP, "Log record attributes", "ZSTD(1)"),
    ("EventName", "String", "Event name for log records representing events", "ZSTD(1)"),
)


def otel_logs_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """DDL of the exporter's ``otel_logs`` (Map attributes, bloom-filter index branch)."""
    target = Target(database, cluster, ttl_days)
    lines = []
    for name, type_, comment, codec in _OTEL_LOGS_COLUMNS:
        codec_sql = f" CODEC({codec})" if codec else ""
        lines.append(f"`{name}` {type_} COMMENT '{comment}'{codec_sql}")
    for key in _K8S_MATERIALIZED:
        lines.append(
            f"`__otel_materialized_{key}` {_LC} MATERIALIZED ResourceAttributes['{key}'] "
            "CODEC(ZSTD(1))"
        )
    lines.append("INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1")
    lines += _map_indexes(
        ("res_attr", "ResourceAttributes"), ("scope_attr", "ScopeAttributes"),
        ("log_attr", "LogAttributes"),
    )
    lines.append("INDEX idx_lower_body lower(Body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8")
    table = _Table(
        name=OTEL_LOGS,
        body=_lines(lines),
        partition_by="toDate(Timestamp)",
        order_by="(toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)",
        ttl_time="toDateTime(Timestamp)",
        sharding_key="cityHash64(ServiceName, Timestamp)",
    )
    return _render(table, target)


def _attribute_items(column: str) -> str:
    return (
        f"{column.removesuffix('Attributes')}AttributeItems Array(String) ALIAS "
        f"arrayMap(kv -> concat(kv.1, '=', kv.2), CAST({column}, 'Array(Tuple(String, String))'))"
    )


_OTEL_TRACES_COLUMNS = (
    "Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1))",
    "TraceId String CODEC(ZSTD(1))",
    "SpanId String CODEC(ZSTD(1))",
    "ParentSpanId String CODEC(ZSTD(1))",
    "TraceState String CODEC(ZSTD(1))",
    f"SpanName {_LC} CODEC(ZSTD(1))",
    f"SpanKind {_LC} CODEC(ZSTD(1))",
    f"ServiceName {_LC} CODEC(ZSTD(1))",
    f"ResourceAttributes {_MAP} CODEC(ZSTD(1))",
    "ScopeName String CODEC(ZSTD(1))",
    "ScopeVersion String CODEC(ZSTD(1))",
    f"SpanAttributes {_MAP} CODEC(ZSTD(1))",
    "Duration UInt64 CODEC(T64, ZSTD(1))",
    f"StatusCode {_LC} CODEC(ZSTD(1))",
    "StatusMessage String CODEC(ZSTD(1))",
    f"Events Nested(Timestamp DateTime64(9), Name {_LC}, Attributes {_MAP}) CODEC(ZSTD(1))",
    "Links Nested(TraceId String, SpanId String, TraceState String, "
    f"Attributes {_MAP}) CODEC(ZSTD(1))",
)


def otel_traces_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """DDL of ``otel_traces``, its trace-id lookup table and the view that fills it.

    Grafana's trace view first reads ``min(Start)``/``max(End)`` for a trace id from
    ``otel_traces_trace_id_ts``, then scans ``otel_traces`` only in that time range.
    """
    target = Target(database, cluster, ttl_days)
    lines = list(_OTEL_TRACES_COLUMNS)
    lines += [_attribute_items("ResourceAttributes"), _attribute_items("SpanAttributes")]
    lines.append("INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1")
    lines += _map_indexes(("res_attr", "ResourceAttributes"), ("span_attr", "SpanAttributes"))
    lines.append("INDEX idx_duration Duration TYPE minmax GRANULARITY 1")
    lines.append(
        "INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8"
    )
    traces = _Table(
        name=OTEL_TRACES,
        body=_lines(lines),
        partition_by="toDate(Timestamp)",
        primary_key="(ServiceName, SpanName, toDateTime(Timestamp))",
        order_by="(ServiceName, SpanName, toDateTime(Timestamp), Timestamp)",
        ttl_time="toDateTime(Timestamp)",
        sharding_key="cityHash64(TraceId)",
    )
    lookup = _Table(
        name=OTEL_TRACES_TRACE_ID_TS,
        body=_lines((
            "TraceId String CODEC(ZSTD(1))",
            "Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1))",
            "End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))",
        )),
        engine="AggregatingMergeTree",
        partition_by="toStartOfWeek(Start)",
        order_by="(TraceId)",
        ttl_time="toDateTime(Start)",
        sharding_key="cityHash64(TraceId)",
        dedup=False,  # filled only by the view
    )
    db = target.database
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{OTEL_TRACES_TRACE_ID_TS_MV}"
        f"{target.on_cluster}\n"
        f"TO {db}.{target.stored_name(OTEL_TRACES_TRACE_ID_TS)}\n"
        "AS SELECT\n"
        "    TraceId,\n"
        "    toDateTime(min(Timestamp)) AS Start,\n"
        "    toDateTime(max(Timestamp)) AS End\n"
        f"FROM {db}.{target.stored_name(OTEL_TRACES)}\n"
        "WHERE TraceId != ''\n"
        "GROUP BY TraceId"
    )
    return _render(traces, target) + _render(lookup, target) + [view]


_METRIC_COMMON_HEAD = (
    f"ResourceAttributes {_MAP} CODEC(ZSTD(1))",
    "ResourceSchemaUrl String CODEC(ZSTD(1))",
    "ScopeName String CODEC(ZSTD(1))",
    "ScopeVersion String CODEC(ZSTD(1))",
    f"ScopeAttributes {_MAP} CODEC(ZSTD(1))",
    "ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1))",
    "ScopeSchemaUrl String CODEC(ZSTD(1))",
    f"ServiceName {_LC} CODEC(ZSTD(1))",
    f"MetricName {_LC} CODEC(ZSTD(1))",
    "MetricDescription String CODEC(ZSTD(1))",
    "MetricUnit String CODEC(ZSTD(1))",
    f"Attributes {_MAP} CODEC(ZSTD(1))",
    "StartTimeUnix DateTime CODEC(Delta, ZSTD(1))",
    "TimeUnix DateTime CODEC(Delta, ZSTD(1))",
)
_EXEMPLARS = (
    f"Exemplars Nested(FilteredAttributes {_MAP}, TimeUnix DateTime, Value Float64, "
    "SpanId String, TraceId String) CODEC(ZSTD(1))"
)
_MIN_MAX_TEMPORALITY = (
    "Flags UInt32 CODEC(ZSTD(1))",
    "Min Float64 CODEC(ZSTD(1))",
    "Max Float64 CODEC(ZSTD(1))",
    "AggregationTemporality Int32 CODEC(ZSTD(1))",
)
# The columns after the common head, per metric point type.
_METRIC_KINDS: dict[str, tuple[str, ...]] = {
    OTEL_METRICS_GAUGE: (
        "Value Float64 CODEC(ZSTD(1))",
        "Flags UInt32 CODEC(ZSTD(1))",
        _EXEMPLARS,
    ),
    OTEL_METRICS_SUM: (
        "Value Float64 CODEC(ZSTD(1))",
        "Flags UInt32 CODEC(ZSTD(1))",
        _EXEMPLARS,
        "AggregationTemporality Int32 CODEC(ZSTD(1))",
        "IsMonotonic Boolean CODEC(Delta, ZSTD(1))",
    ),
    OTEL_METRICS_HISTOGRAM: (
        "Count UInt64 CODEC(Delta, ZSTD(1))",
        "Sum Float64 CODEC(ZSTD(1))",
        "BucketCounts Array(UInt64) CODEC(ZSTD(1))",
        "ExplicitBounds Array(Float64) CODEC(ZSTD(1))",
        _EXEMPLARS,
        *_MIN_MAX_TEMPORALITY,
    ),
    OTEL_METRICS_EXP_HISTOGRAM: (
        "Count UInt64 CODEC(Delta, ZSTD(1))",
        "Sum Float64 CODEC(ZSTD(1))",
        "Scale Int32 CODEC(ZSTD(1))",
        "ZeroCount UInt64 CODEC(ZSTD(1))",
        "PositiveOffset Int32 CODEC(ZSTD(1))",
        "PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1))",
        "NegativeOffset Int32 CODEC(ZSTD(1))",
        "NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1))",
        _EXEMPLARS,
        *_MIN_MAX_TEMPORALITY,
    ),
    OTEL_METRICS_SUMMARY: (
        "Count UInt64 CODEC(Delta, ZSTD(1))",
        "Sum Float64 CODEC(ZSTD(1))",
        "ValueAtQuantiles Nested(Quantile Float64, Value Float64) CODEC(ZSTD(1))",
        "Flags UInt32 CODEC(ZSTD(1))",
    ),
}


def otel_metrics_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """DDL of the exporter's five ``otel_metrics_*`` tables, one per OTLP point type."""
    target = Target(database, cluster, ttl_days)
    statements: list[str] = []
    for name, tail in _METRIC_KINDS.items():
        lines = [*_METRIC_COMMON_HEAD, *tail]
        lines += _map_indexes(
            ("res_attr", "ResourceAttributes"), ("scope_attr", "ScopeAttributes"),
            ("attr", "Attributes"),
        )
        lines.append("INDEX idx_time_minmax TimeUnix TYPE minmax GRANULARITY 1")
        table = _Table(
            name=name,
            body=_lines(lines),
            partition_by="toDate(TimeUnix)",
            order_by=(
                "(ServiceName, MetricName, toStartOfHour(TimeUnix), cityHash64(Attributes), "
                "TimeUnix)"
            ),
            ttl_time="toDateTime(TimeUnix)",
            sharding_key="cityHash64(ServiceName, MetricName, Attributes)",
        )
        statements += _render(table, target)
    return statements
