"""meshloop's ClickHouse DDL: pure functions from (database, cluster, TTL) to SQL text.

Four families of tables:

- ``access_logs`` — our typed, wide table for Envoy access-log entries
  (``envoy.data.accesslog.v3`` ``HTTPAccessLogEntry`` / ``TCPAccessLogEntry``,
  https://www.envoyproxy.io/docs/envoy/latest/api-v3/data/accesslog/v3/accesslog.proto).
- The OpenTelemetry Collector ClickHouse exporter's tables (``otel_logs``, ``otel_traces``,
  ``otel_traces_trace_id_ts`` + ``otel_traces_trace_id_ts_mv``, ``otel_metrics_*``), with the
  exporter's column names, types, codecs, skip indexes, partitioning and sort keys, so that
  Grafana's ClickHouse data source (OTel mode) reads them unchanged.
- ``access_log_windows`` (1 s) and ``access_log_windows_1m`` (its rollup, fed by a view):
  per-edge counts, bytes and a fixed-bound latency histogram
  (:func:`access_log_windows_ddl`, :mod:`meshloop.accesslog.windows`).
- ``schema_migrations`` — see :mod:`meshloop.store.migrations`.

The OTel exporter's tables are in :mod:`meshloop.store.schema_otel`, with where their shapes
come from.

One deliberate difference: every table meshloop inserts into gets a deduplication window
(``non_replicated_deduplication_window`` single node, ``replicated_deduplication_window``
cluster) so a replayed batch with the same ``insert_deduplication_token`` is dropped.
Settings don't change what readers see.

Cluster mode (``cluster`` given): every statement gets ``ON CLUSTER <cluster>``; each table is
created as ``<name>_local`` with the ``Replicated*`` variant of its engine
(``/clickhouse/tables/{shard}/<database>/<name>_local``, ``{replica}``; the macros stay
literal for the servers to expand), plus a ``Distributed`` table under the public name.
The materialized view reads from and writes to the local tables, so each shard aggregates
its own spans; traces and their lookup rows are both sharded by ``cityHash64(TraceId)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshloop.store.base import check_identifier

ACCESS_LOGS = "access_logs"
OTEL_LOGS = "otel_logs"
OTEL_TRACES = "otel_traces"
OTEL_TRACES_TRACE_ID_TS = "otel_traces_trace_id_ts"
OTEL_TRACES_TRACE_ID_TS_MV = "otel_traces_trace_id_ts_mv"
OTEL_METRICS_GAUGE = "otel_metrics_gauge"
OTEL_METRICS_SUM = "otel_metrics_sum"
OTEL_METRICS_HISTOGRAM = "otel_metrics_histogram"
OTEL_METRICS_EXP_HISTOGRAM = "otel_metrics_exponential_histogram"
OTEL_METRICS_SUMMARY = "otel_metrics_summary"
SCHEMA_MIGRATIONS = "schema_migrations"
LOCAL_SUFFIX = "_local"

_DEDUP_WINDOW = 10000

# --- access_logs ------------------------------------------------------------------------
# (name, type, codec). Times are nanoseconds. The time_to_* fields are Nullable because
# "never happened" (no upstream, reset before the first byte) differs from 0 ns.
_NS = "Nullable(UInt64)"
_LC = "LowCardinality(String)"
_INT = "T64, ZSTD(1)"
ACCESS_LOG_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Timestamp", "DateTime64(9)", "Delta(8), ZSTD(1)"),  # common_properties.start_time
    ("LogKind", _LC, "ZSTD(1)"),  # 'http' | 'tcp' (which entry message)
    ("AccessLogType", _LC, "ZSTD(1)"),  # AccessLogType enum name, e.g. DownstreamEnd
    ("ReporterNodeId", _LC, "ZSTD(1)"),
    ("ReporterCluster", _LC, "ZSTD(1)"),
    ("ReporterWorkload", _LC, "ZSTD(1)"),
    ("ReporterNamespace", _LC, "ZSTD(1)"),
    ("ReporterVersion", _LC, "ZSTD(1)"),
    ("LogName", _LC, "ZSTD(1)"),
    ("Duration", "UInt64", _INT),
    ("TimeToLastRxByte", _NS, "ZSTD(1)"),
    ("TimeToFirstUpstreamTxByte", _NS, "ZSTD(1)"),
    ("TimeToLastUpstreamTxByte", _NS, "ZSTD(1)"),
    ("TimeToFirstUpstreamRxByte", _NS, "ZSTD(1)"),
    ("TimeToLastUpstreamRxByte", _NS, "ZSTD(1)"),
    ("TimeToFirstDownstreamTxByte", _NS, "ZSTD(1)"),
    ("TimeToLastDownstreamTxByte", _NS, "ZSTD(1)"),
    ("ResponseCode", "UInt16", _INT),
    ("ResponseFlags", "Array(LowCardinality(String))", "ZSTD(1)"),  # UF, UO, NR, URX, ...
    ("ResponseFlagsMask", "UInt64", _INT),
    ("ResponseCodeDetails", _LC, "ZSTD(1)"),
    ("ConnectionTerminationDetails", _LC, "ZSTD(1)"),
    ("Method", _LC, "ZSTD(1)"),
    ("Scheme", _LC, "ZSTD(1)"),
    ("Authority", _LC, "ZSTD(1)"),
    ("Path", "String", "ZSTD(1)"),
    ("UserAgent", _LC, "ZSTD(1)"),
    ("RequestId", "String", "ZSTD(1)"),
    ("TraceId", "String", "ZSTD(1)"),
    ("SpanId", "String", "ZSTD(1)"),
    ("Referer", "String", "ZSTD(1)"),
    ("ForwardedFor", "String", "ZSTD(1)"),
    ("RequestHeadersBytes", "UInt64", _INT),
    ("RequestBodyBytes", "UInt64", _INT),
    ("ResponseHeadersBytes", "UInt64", _INT),
    ("ResponseBodyBytes", "UInt64", _INT),
    ("TcpReceivedBytes", "UInt64", _INT),  # TCPAccessLogEntry.connection_properties
    ("TcpSentBytes", "UInt64", _INT),
    ("Protocol", _LC, "ZSTD(1)"),  # HTTP10 | HTTP11 | HTTP2 | HTTP3 | '' for TCP
    ("UpstreamCluster", _LC, "ZSTD(1)"),
    ("UpstreamHost", _LC, "ZSTD(1)"),
    ("UpstreamLocalAddress", "String", "ZSTD(1)"),
    ("UpstreamTransportFailureReason", _LC, "ZSTD(1)"),
    ("RouteName", _LC, "ZSTD(1)"),
    ("DownstreamRemoteAddress", "String", "ZSTD(1)"),
    ("DownstreamLocalAddress", _LC, "ZSTD(1)"),
    ("SourcePrincipal", _LC, "ZSTD(1)"),  # peer SPIFFE id
    ("SourceWorkload", _LC, "ZSTD(1)"),
    ("SourceNamespace", _LC, "ZSTD(1)"),
    ("DestinationService", _LC, "ZSTD(1)"),
    ("DestinationSubset", _LC, "ZSTD(1)"),
    ("DestinationPort", "UInt16", _INT),
    ("UpstreamRequestAttemptCount", "UInt32", _INT),
    ("TlsVersion", _LC, "ZSTD(1)"),
    ("TlsCipherSuite", _LC, "ZSTD(1)"),
    ("TlsSni", _LC, "ZSTD(1)"),
    ("BatchId", "String", "ZSTD(1)"),  # the collector batch, for idempotent replay
)

_ACCESS_LOG_INDEXES = (
    "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
    "INDEX idx_request_id RequestId TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_response_code ResponseCode TYPE set(100) GRANULARITY 1",
    "INDEX idx_upstream_cluster UpstreamCluster TYPE set(100) GRANULARITY 1",
    "INDEX idx_duration Duration TYPE minmax GRANULARITY 1",
)


@dataclass(frozen=True)
class Target:
    """Where DDL goes: a database, optionally a cluster, and the retention in days."""

    database: str
    cluster: str | None = None
    ttl_days: int = 30

    def __post_init__(self) -> None:
        check_identifier(self.database, "database")
        if self.cluster is not None:
            check_identifier(self.cluster, "cluster")
        if isinstance(self.ttl_days, bool) or not isinstance(self.ttl_days, int):
            raise ValueError(f"ttl_days must be an int, got {self.ttl_days!r}")
        if self.ttl_days < 0:
            raise ValueError(f"ttl_days must be >= 0 (0 = keep forever), got {self.ttl_days}")

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    def stored_name(self, table: str) -> str:
        """The table that holds rows: ``<table>_local`` in cluster mode, else ``table``."""
        return table + LOCAL_SUFFIX if self.cluster else table


@dataclass(frozen=True)
class _Table:
    name: str
    body: str  # column and index definitions, one per line
    order_by: str
    partition_by: str
    ttl_time: str | None  # a DateTime expression; None = the table has no TTL
    sharding_key: str
    primary_key: str | None = None
    engine: str = "MergeTree"
    dedup: bool = True


def _engine(table: _Table, target: Target) -> str:
    if not target.cluster:
        return f"{table.engine}()"
    path = "/clickhouse/tables/{shard}/" + f"{target.database}/{target.stored_name(table.name)}"
    return f"Replicated{table.engine}('{path}', '{{replica}}')"


def _settings(table: _Table, target: Target) -> str:
    settings = ["index_granularity = 8192", "ttl_only_drop_parts = 1"]
    if table.dedup:
        window = "replicated" if target.cluster else "non_replicated"
        settings.append(f"{window}_deduplication_window = {_DEDUP_WINDOW}")
    return ", ".join(settings)


def _render(table: _Table, target: Target) -> list[str]:
    """CREATE statements for one table: one single node, local + Distributed on a cluster."""
    db = target.database
    stored = target.stored_name(table.name)
    clauses = [f"PARTITION BY {table.partition_by}"]
    if table.primary_key:
        clauses.append(f"PRIMARY KEY {table.primary_key}")
    clauses.append(f"ORDER BY {table.order_by}")
    if table.ttl_time and target.ttl_days > 0:
        clauses.append(f"TTL {table.ttl_time} + toIntervalDay({target.ttl_days})")
    clauses.append(f"SETTINGS {_settings(table, target)}")
    create = (
        f"CREATE TABLE IF NOT EXISTS {db}.{stored}{target.on_cluster}\n(\n{table.body}\n)\n"
        f"ENGINE = {_engine(table, target)}\n" + "\n".join(clauses)
    )
    if not target.cluster:
        return [create]
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {db}.{table.name}{target.on_cluster}\n"
        f"AS {db}.{stored}\n"
        f"ENGINE = Distributed('{target.cluster}', '{db}', '{stored}', {table.sharding_key})"
    )
    return [create, distributed]


def _lines(items: list[str] | tuple[str, ...]) -> str:
    return ",\n".join(f"    {item}" for item in items)


def create_database_sql(database: str, cluster: str | None = None) -> str:
    """``CREATE DATABASE IF NOT EXISTS`` for ``database`` (on every node of ``cluster``)."""
    target = Target(database, cluster)
    return f"CREATE DATABASE IF NOT EXISTS {database}{target.on_cluster}"


def access_logs_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """DDL of ``access_logs``, one row per Envoy HTTP or TCP access-log entry.

    Sort key ``(DestinationService, toStartOfMinute(Timestamp), Timestamp)``: the readers
    (canary analysis, circuit breaking, dashboards) ask "service X over the last N
    minutes", so one service's rows for a time range are contiguous; the minute bucket
    keeps the primary index small and lets a per-minute GROUP BY read in key order.
    Sharded by ``cityHash64(RequestId, Timestamp)``: even (a hot service doesn't land on
    one shard), and deterministic, so a replayed batch splits into the same per-shard
    blocks and its deduplication token still matches.
    """
    target = Target(database, cluster, ttl_days)
    columns = [f"{name} {type_} CODEC({codec})" for name, type_, codec in ACCESS_LOG_COLUMNS]
    table = _Table(
        name=ACCESS_LOGS,
        body=_lines(columns + list(_ACCESS_LOG_INDEXES)),
        partition_by="toDate(Timestamp)",
        primary_key="(DestinationService, toStartOfMinute(Timestamp))",
        order_by="(DestinationService, toStartOfMinute(Timestamp), Timestamp)",
        ttl_time="toDateTime(Timestamp)",
        sharding_key="cityHash64(RequestId, Timestamp)",
    )
    return _render(table, target)


def schema_migrations_ddl(database: str, cluster: str | None = None) -> list[str]:
    """DDL of ``schema_migrations``: one row per applied migration, newest row wins.

    In cluster mode it is one replica set spanning every node (no ``{shard}`` in the
    ZooKeeper path, no Distributed table), so each node reads the full history locally.
    """
    target = Target(database, cluster)
    body = _lines((
        "version UInt32",
        "name String",
        "checksum String",
        "applied_at DateTime64(3)",
    ))
    if cluster:
        path = f"/clickhouse/tables/all/{database}/{SCHEMA_MIGRATIONS}"
        engine = f"ReplicatedReplacingMergeTree('{path}', '{{replica}}', applied_at)"
    else:
        engine = "ReplacingMergeTree(applied_at)"
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{SCHEMA_MIGRATIONS}{target.on_cluster}\n"
        f"(\n{body}\n)\nENGINE = {engine}\nORDER BY version"
    ]


# --- access_log_windows -----------------------------------------------------------------
ACCESS_LOG_WINDOWS = "access_log_windows"
ACCESS_LOG_WINDOWS_1M = "access_log_windows_1m"
ACCESS_LOG_WINDOWS_1M_MV = "access_log_windows_1m_mv"

LATENCY_BOUNDS_US: tuple[int, ...] = tuple(round(500 * 2 ** (k / 4)) for k in range(69))
"""Upper bounds (inclusive, like Prometheus ``le``) of the finite latency buckets, in µs:
500 µs × 2^(k/4), k = 0..68, rounded to whole µs (0.5 ms … 65.536 s). One more bucket,
the last, holds everything above 65.536 s (+Inf). Fixed forever: changing them is a
migration, because stored windows are only mergeable under the same bounds."""

LATENCY_BUCKET_COLUMNS: tuple[str, ...] = tuple(
    f"B{i:02d}" for i in range(len(LATENCY_BOUNDS_US) + 1)
)
"""One UInt64 count column per latency bucket, ``B00`` (≤ 0.5 ms) … ``B69`` (+Inf)."""

# (name, type, codec). The edge: who reported, who called, what was called and how it
# ended. Workload names are unique only within a namespace (Istio pairs
# source_workload with source_workload_namespace), so both namespaces are in the key.
WINDOW_EDGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ReporterNamespace", _LC, "ZSTD(1)"),
    ("ReporterWorkload", _LC, "ZSTD(1)"),
    ("SourceNamespace", _LC, "ZSTD(1)"),
    ("SourceWorkload", _LC, "ZSTD(1)"),
    ("DestinationService", _LC, "ZSTD(1)"),
    ("DestinationSubset", _LC, "ZSTD(1)"),
    ("UpstreamCluster", _LC, "ZSTD(1)"),
    ("ResponseClass", "UInt8", "ZSTD(1)"),  # ResponseCode / 100: 0 (none, TCP), 1..5
    ("HasResponseFlags", "Bool", "ZSTD(1)"),  # any Envoy response flag set
)
WINDOW_VALUE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Requests", "UInt64", _INT),
    ("Errors5xx", "UInt64", _INT),
    ("Errors4xx", "UInt64", _INT),
    ("BytesIn", "UInt64", _INT),  # request headers + body, or TCP bytes received
    ("BytesOut", "UInt64", _INT),  # response headers + body, or TCP bytes sent
    ("DurationSumNs", "UInt64", _INT),
    *((name, "UInt64", _INT) for name in LATENCY_BUCKET_COLUMNS),
)
_WINDOW_KEY = ", ".join(
    ["DestinationService", "Window"] + [n for n, _t, _c in WINDOW_EDGE_COLUMNS
                                        if n != "DestinationService"]
)


def _window_table(name: str, dedup: bool) -> _Table:
    columns = [("Window", "DateTime", "Delta(4), ZSTD(1)"), *WINDOW_EDGE_COLUMNS,
               *WINDOW_VALUE_COLUMNS]
    lines = [f"{n} {t} CODEC({c})" for n, t, c in columns]
    lines.append(f"LatencyBuckets Array(UInt64) ALIAS [{', '.join(LATENCY_BUCKET_COLUMNS)}]")
    return _Table(
        name=name,
        body=_lines(lines),
        engine="SummingMergeTree",
        partition_by="toDate(Window)",
        primary_key="(DestinationService, Window)",
        order_by=f"({_WINDOW_KEY})",
        ttl_time="Window",
        sharding_key="cityHash64(DestinationService, SourceWorkload, ReporterWorkload)",
        dedup=dedup,
    )


def access_log_windows_ddl(
    database: str, cluster: str | None = None, ttl_days: int = 30
) -> list[str]:
    """DDL of the per-edge latency/traffic windows: 1 s, and a 1 min rollup fed by a view.

    ``access_log_windows`` holds one row per (``Window`` second, edge) and partial
    (:func:`meshloop.accesslog.windows.window_partials`): a ``SummingMergeTree`` whose
    sort key is the whole edge + window, so partials of the same key from several
    batches and collectors add up on merge. Merges are eventual: readers always
    ``sum()`` with ``GROUP BY`` (never rely on one row per key). The histogram is one
    ``UInt64`` column per bucket (``B00``..``B69``, bounds :data:`LATENCY_BOUNDS_US`),
    summed like every other count; ``LatencyBuckets`` is an ``ALIAS`` array of them
    for SQL (``sumForEach(LatencyBuckets)`` merges histograms).

    ``access_log_windows_1m`` has the same columns with ``Window`` = the minute; the
    view ``access_log_windows_1m_mv`` sums every block inserted into the 1 s table.

    Replays: both tables have a deduplication window. In ClickHouse 26
    ``deduplicate_blocks_in_dependent_materialized_views`` is on by default, so a
    block dropped as a duplicate by the 1 s table still flows through the view, and
    the 1 min table drops it by the token ClickHouse derives for it — without its own
    window the rollup would double count (tested). Always insert windows with a
    ``dedup_token`` (the batch id): without one, deduplication falls back to a hash of
    the block, and two collectors' identical partials would be taken for one.

    p50/p99 per edge over a time range, interpolated inside the buckets
    (:func:`latency_quantile_sql`)::

        SELECT DestinationService, SourceWorkload, sum(Requests) AS requests,
               sumForEach(LatencyBuckets) AS h,
               {latency_quantile_sql(0.5, "h")} AS p50_ms,
               {latency_quantile_sql(0.99, "h")} AS p99_ms
        FROM access_log_windows_1m
        WHERE Window >= {start:DateTime} AND Window < {end:DateTime}
        GROUP BY DestinationService, SourceWorkload
    """
    target = Target(database, cluster, ttl_days)
    db = target.database
    value_sums = ",\n".join(f"    sum({n}) AS {n}" for n, _t, _c in WINDOW_VALUE_COLUMNS)
    edges = ", ".join(n for n, _t, _c in WINDOW_EDGE_COLUMNS)
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{ACCESS_LOG_WINDOWS_1M_MV}"
        f"{target.on_cluster}\n"
        f"TO {db}.{target.stored_name(ACCESS_LOG_WINDOWS_1M)}\n"
        "AS SELECT\n"
        "    toStartOfMinute(Window) AS Window,\n"
        f"    {edges},\n"
        f"{value_sums}\n"
        f"FROM {db}.{target.stored_name(ACCESS_LOG_WINDOWS)}\n"
        f"GROUP BY Window, {edges}"
    )
    return (
        _render(_window_table(ACCESS_LOG_WINDOWS, dedup=True), target)
        + _render(_window_table(ACCESS_LOG_WINDOWS_1M, dedup=True), target)
        + [view]
    )


def latency_quantile_sql(q: float, counts: str = "sumForEach(LatencyBuckets)") -> str:
    """A ClickHouse expression: the ``q`` quantile in ms of the histogram ``counts``.

    ``counts`` is an ``Array(UInt64)`` of bucket counts (usually an alias of
    ``sumForEach(LatencyBuckets)``). Same rule as Prometheus' ``histogram_quantile``
    and :func:`meshloop.accesslog.windows.quantile_from_buckets`: rank ``q × total``,
    the first non-empty bucket whose cumulative count reaches it, linear interpolation
    between its bounds; the +Inf bucket answers its lower bound (65536 ms); an empty
    histogram answers ``nan``.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    bounds_ms = [b / 1000 for b in LATENCY_BOUNDS_US]
    lows = "[" + ", ".join(repr(b) for b in [0.0, *bounds_ms]) + "]"
    highs = "[" + ", ".join(repr(b) for b in [*bounds_ms, bounds_ms[-1]]) + "]"
    return (
        f"arrayMap((c, r) -> arrayMap(i -> if(i = 0, nan, {lows}[i] + ({highs}[i] - {lows}[i])"
        f" * (r - (c[i] - {counts}[i])) / {counts}[i]),"
        f" [arrayFirstIndex((x, y) -> y > 0 AND x >= r, c, {counts})])[1],"
        f" [arrayCumSum({counts})], [{q!r} * arraySum({counts})])[1]"
    )
