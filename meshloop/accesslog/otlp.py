"""OTLP logs/traces/metrics and Envoy metrics-service batches → polars frames shaped like
the OpenTelemetry Collector ClickHouse exporter's tables (``otel_logs``, ``otel_traces``,
``otel_metrics_*``; DDL in :mod:`meshloop.store.schema`).

Row mapping follows the exporter's Go code (opentelemetry-collector-contrib
``exporter/clickhouseexporter``, the native-batch generation with ``EventName``:
``exporter_logs.go``, ``exporter_traces.go``, ``internal/metrics/*_metrics.go``), with
pdata's string forms: attribute values and log bodies as ``Value.AsString()``, ids as hex
(``''`` when unset), ``SpanKind``/``StatusCode`` as pdata's ``String()`` (``Server``,
``Error``). Deliberate differences, where Go would write nonsense:

- a span that ends before it starts gets ``Duration`` 0 (Go's uint64 subtraction wraps);
- times past 2262-04-11 (beyond Int64 nanoseconds) are clamped to that limit.

Each function parses every payload once, collects columns in one pass and builds one
DataFrame whose columns and dtypes are the table's schema constant below. Map columns
are ``List(Struct{key, value})`` (see :func:`meshloop.store.base.as_clickhouse_arrow`);
Nested columns are flattened to ``Events.Name``-style array columns, as ClickHouse
inserts them; ``Store.insert_df`` turns key/value lists into maps at any depth, so
Nested map columns (``Events.Attributes``, ...) insert as they are.

Bad input raises :class:`DecodeError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import polars as pl
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from meshloop.accesslog.otlp_columns import (
    MAP,
    MapLists,
    Maps,
    any_string,
    frame,
    hex_or_empty,
    hex_or_zeros,
)
from meshloop.collector.gen.metrics_pb2 import MetricType
from meshloop.collector.gen.metrics_service_pb2 import StreamMetricsMessage
from meshloop.store import schema as ddl

__all__ = [
    "DecodeError", "OTEL_LOGS_SCHEMA", "OTEL_TRACES_SCHEMA", "OTEL_METRICS_SCHEMAS",
    "logs_frame", "traces_frame", "metrics_frames", "envoy_metrics_frames",
]

if "event_name" not in LogRecord.DESCRIPTOR.fields_by_name:  # pragma: no cover - env check
    raise ImportError(
        "opentelemetry.proto is the pre-1.0 copy bundled with xds-protos (no LogRecord."
        "event_name); reinstall opentelemetry-proto over it: "
        "uv pip install --reinstall-package opentelemetry-proto opentelemetry-proto"
    )


class DecodeError(ValueError):
    """A payload is not a valid serialized message of the expected type."""


_S, _TS, _U8, _U32, _I32, _U64, _F64 = (
    pl.String(), pl.Datetime("ns"), pl.UInt8(), pl.UInt32(), pl.Int32(), pl.UInt64(), pl.Float64()
)

OTEL_LOGS_SCHEMA = pl.Schema({
    "Timestamp": _TS, "TraceId": _S, "SpanId": _S, "TraceFlags": _U8, "SeverityText": _S,
    "SeverityNumber": _U8, "ServiceName": _S, "Body": _S, "ResourceSchemaUrl": _S,
    "ResourceAttributes": MAP, "ScopeSchemaUrl": _S, "ScopeName": _S, "ScopeVersion": _S,
    "ScopeAttributes": MAP, "LogAttributes": MAP, "EventName": _S,
})
"""Insertable columns of ``otel_logs``, in table order."""

OTEL_TRACES_SCHEMA = pl.Schema({
    "Timestamp": _TS, "TraceId": _S, "SpanId": _S, "ParentSpanId": _S, "TraceState": _S,
    "SpanName": _S, "SpanKind": _S, "ServiceName": _S, "ResourceAttributes": MAP,
    "ScopeName": _S, "ScopeVersion": _S, "SpanAttributes": MAP, "Duration": _U64,
    "StatusCode": _S, "StatusMessage": _S,
    "Events.Timestamp": pl.List(_TS), "Events.Name": pl.List(_S), "Events.Attributes": pl.List(MAP),
    "Links.TraceId": pl.List(_S), "Links.SpanId": pl.List(_S), "Links.TraceState": pl.List(_S),
    "Links.Attributes": pl.List(MAP),
})
"""Insertable columns of ``otel_traces`` (Nested columns flattened), in table order."""

_METRIC_HEAD = {
    "ResourceAttributes": MAP, "ResourceSchemaUrl": _S, "ScopeName": _S, "ScopeVersion": _S,
    "ScopeAttributes": MAP, "ScopeDroppedAttrCount": _U32, "ScopeSchemaUrl": _S,
    "ServiceName": _S, "MetricName": _S, "MetricDescription": _S, "MetricUnit": _S,
    "Attributes": MAP, "StartTimeUnix": _TS, "TimeUnix": _TS,
}
_EXEMPLARS = {
    "Exemplars.FilteredAttributes": pl.List(MAP), "Exemplars.TimeUnix": pl.List(_TS),
    "Exemplars.Value": pl.List(_F64), "Exemplars.SpanId": pl.List(_S),
    "Exemplars.TraceId": pl.List(_S),
}
_MIN_MAX_TEMPORALITY = {"Flags": _U32, "Min": _F64, "Max": _F64, "AggregationTemporality": _I32}
OTEL_METRICS_SCHEMAS: dict[str, pl.Schema] = {
    ddl.OTEL_METRICS_GAUGE: pl.Schema({**_METRIC_HEAD, "Value": _F64, "Flags": _U32, **_EXEMPLARS}),
    ddl.OTEL_METRICS_SUM: pl.Schema({
        **_METRIC_HEAD, "Value": _F64, "Flags": _U32, **_EXEMPLARS,
        "AggregationTemporality": _I32, "IsMonotonic": pl.Boolean(),
    }),
    ddl.OTEL_METRICS_HISTOGRAM: pl.Schema({
        **_METRIC_HEAD, "Count": _U64, "Sum": _F64, "BucketCounts": pl.List(_U64),
        "ExplicitBounds": pl.List(_F64), **_EXEMPLARS, **_MIN_MAX_TEMPORALITY,
    }),
    ddl.OTEL_METRICS_EXP_HISTOGRAM: pl.Schema({
        **_METRIC_HEAD, "Count": _U64, "Sum": _F64, "Scale": _I32, "ZeroCount": _U64,
        "PositiveOffset": _I32, "PositiveBucketCounts": pl.List(_U64), "NegativeOffset": _I32,
        "NegativeBucketCounts": pl.List(_U64), **_EXEMPLARS, **_MIN_MAX_TEMPORALITY,
    }),
    ddl.OTEL_METRICS_SUMMARY: pl.Schema({
        **_METRIC_HEAD, "Count": _U64, "Sum": _F64, "ValueAtQuantiles.Quantile": pl.List(_F64),
        "ValueAtQuantiles.Value": pl.List(_F64), "Flags": _U32,
    }),
}
"""Insertable columns of each ``otel_metrics_*`` table, by table name, in table order."""

# pdata's ptrace.SpanKind.String() / ptrace.StatusCode.String(); unknown values → ''.
_SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_CODES = ("Unset", "Ok", "Error")
_TEMPORALITY_DELTA, _TEMPORALITY_CUMULATIVE = 1, 2  # OTLP AggregationTemporality


def _parse(message_type: Any, payloads: Sequence[bytes]) -> list[Any]:
    parsed = []
    for index, payload in enumerate(payloads):
        try:
            parsed.append(message_type.FromString(payload))
        except (_ProtobufDecodeError, TypeError, ValueError) as exc:
            raise DecodeError(
                f"request {index}: not a valid {message_type.DESCRIPTOR.full_name}: {exc}"
            ) from exc
    return parsed


def _scoped(
    scopes: _Scopes, message_type: Any, requests: Sequence[bytes], resources: str, scoped: str, items: str
) -> Iterator[tuple[int, Any]]:
    """Walk OTLP's request → resource → scope nesting (``resource_logs`` / ``scope_logs``
    / ``log_records`` and the like): yield each scope's row in ``scopes`` and its items."""
    for request in _parse(message_type, requests):
        for top in getattr(request, resources):
            resource, service = _resource(top.resource)
            for scope in getattr(top, scoped):
                row = scopes.add(resource, top.schema_url, service, scope.scope, scope.schema_url)
                yield row, getattr(scope, items)


def _name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else ""


class _Scopes:
    """One row per (resource, scope): the columns every record of that scope repeats.

    Records keep only the row index; :meth:`take` expands a column with one gather.
    """

    def __init__(self) -> None:
        self.resource_attributes = Maps()
        self.scope_attributes = Maps()
        self.columns: dict[str, list[Any]] = {
            "ResourceSchemaUrl": [], "ServiceName": [], "ScopeName": [], "ScopeVersion": [],
            "ScopeDroppedAttrCount": [], "ScopeSchemaUrl": [],
        }
        self._built: dict[str, pl.Series] = {}

    def add(
        self, resource: list[tuple[str, str]], resource_url: str, service: str,
        scope: Any, scope_url: str,
    ) -> int:
        self.resource_attributes.add_pairs(resource)
        self.scope_attributes.add_attributes(scope.attributes)
        c = self.columns
        c["ResourceSchemaUrl"].append(resource_url)
        c["ServiceName"].append(service)
        c["ScopeName"].append(scope.name)
        c["ScopeVersion"].append(scope.version)
        c["ScopeDroppedAttrCount"].append(scope.dropped_attributes_count)
        c["ScopeSchemaUrl"].append(scope_url)
        return len(c["ServiceName"]) - 1

    def take(self, name: str, rows: list[int], dtype: pl.DataType) -> pl.Series:
        if name not in self._built:
            if name == "ResourceAttributes":
                self._built[name] = self.resource_attributes.series(name)
            elif name == "ScopeAttributes":
                self._built[name] = self.scope_attributes.series(name)
            else:
                self._built[name] = pl.Series(name, self.columns[name], dtype=dtype)
        return self._built[name].gather(rows)

    def expand(self, schema: pl.Schema, rows: list[int], columns: dict[str, Any]) -> None:
        for name in ("ResourceAttributes", "ScopeAttributes", *self.columns):
            if name in schema:
                columns[name] = self.take(name, rows, schema[name])


def _resource(resource: Any) -> tuple[list[tuple[str, str]], str]:
    """Rendered resource attributes and the service name (first ``service.name``)."""
    pairs = [(kv.key, any_string(kv.value)) for kv in resource.attributes]
    service = next((value for key, value in pairs if key == "service.name"), "")
    return pairs, service


# --- logs --------------------------------------------------------------------------------
_LOG_ROW = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "Body",
    "EventName",
)


def _transpose(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Per-record tuples → one list per column (a C-speed transpose)."""
    if not rows:
        return {name: [] for name in names}
    return {name: list(column) for name, column in zip(names, zip(*rows, strict=True), strict=True)}


def logs_frame(requests: Sequence[bytes]) -> pl.DataFrame:
    """Serialized ``ExportLogsServiceRequest``s → ``otel_logs`` rows (:data:`OTEL_LOGS_SCHEMA`).

    Timestamp is the record's time, or its observed time when that is 0; ServiceName the
    resource's ``service.name``; Body ``AsString()`` of the body; TraceFlags and
    SeverityNumber truncated to 8 bits as the exporter's ``uint8(...)`` does.
    """
    scopes = _Scopes()
    scope_rows: list[int] = []
    rows: list[tuple[Any, ...]] = []
    attributes = Maps()
    add_attributes = attributes.add_attributes
    for row, records in _scoped(
        scopes, ExportLogsServiceRequest, requests, "resource_logs", "scope_logs", "log_records"
    ):
        scope_rows.extend([row] * len(records))
        for record in records:
            rows.append((
                record.time_unix_nano or record.observed_time_unix_nano,
                hex_or_empty(record.trace_id),
                hex_or_empty(record.span_id),
                record.flags & 0xFF,
                record.severity_text,
                record.severity_number & 0xFF,
                any_string(record.body),
                record.event_name,
            ))
            add_attributes(record.attributes)
    columns = _transpose(_LOG_ROW, rows)
    columns["LogAttributes"] = attributes.series("LogAttributes")
    scopes.expand(OTEL_LOGS_SCHEMA, scope_rows, columns)
    return frame(OTEL_LOGS_SCHEMA, columns)


# --- traces ------------------------------------------------------------------------------
_SPAN_ROW = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "Duration", "StatusCode", "StatusMessage", "Events.Timestamp", "Events.Name",
    "Links.TraceId", "Links.SpanId", "Links.TraceState",
)
_NONE: tuple[()] = ()


class _SpanColumns:
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.span_attributes = Maps()
        self.event_attributes = MapLists()
        self.link_attributes = MapLists()

    def add(self, span: Any) -> None:
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        status = span.status
        events, links = span.events, span.links
        if events:
            event_times = [event.time_unix_nano for event in events]
            event_names = [event.name for event in events]
            for event in events:
                self.event_attributes.maps.add_attributes(event.attributes)
        else:
            event_times = event_names = _NONE  # type: ignore[assignment]
        self.event_attributes.end_row()
        if links:
            link_traces = [hex_or_empty(link.trace_id) for link in links]
            link_spans = [hex_or_empty(link.span_id) for link in links]
            link_states = [link.trace_state for link in links]
            for link in links:
                self.link_attributes.maps.add_attributes(link.attributes)
        else:
            link_traces = link_spans = link_states = _NONE  # type: ignore[assignment]
        self.link_attributes.end_row()
        self.span_attributes.add_attributes(span.attributes)
        self.rows.append((
            start,
            hex_or_empty(span.trace_id),
            hex_or_empty(span.span_id),
            hex_or_empty(span.parent_span_id),
            span.trace_state,
            span.name,
            _name(_SPAN_KINDS, span.kind),
            end - start if end > start else 0,
            _name(_STATUS_CODES, status.code),
            status.message,
            event_times, event_names, link_traces, link_spans, link_states,
        ))


def traces_frame(requests: Sequence[bytes]) -> pl.DataFrame:
    """Serialized ``ExportTraceServiceRequest``s → ``otel_traces`` rows
    (:data:`OTEL_TRACES_SCHEMA`).

    Timestamp is the span's start; Duration ``end - start`` in ns; SpanKind and StatusCode
    pdata's names (``Server``, ``Client``, ``Unset``, ``Ok``, ``Error``, ...); events and
    links as the ``Events.*`` / ``Links.*`` arrays, one element per event or link.
    """
    scopes = _Scopes()
    scope_rows: list[int] = []
    spans = _SpanColumns()
    for row, items in _scoped(
        scopes, ExportTraceServiceRequest, requests, "resource_spans", "scope_spans", "spans"
    ):
        scope_rows.extend([row] * len(items))
        for span in items:
            spans.add(span)
    columns = _transpose(_SPAN_ROW, spans.rows)
    columns["SpanAttributes"] = spans.span_attributes.series("SpanAttributes")
    columns["Events.Attributes"] = spans.event_attributes.series("Events.Attributes")
    columns["Links.Attributes"] = spans.link_attributes.series("Links.Attributes")
    scopes.expand(OTEL_TRACES_SCHEMA, scope_rows, columns)
    return frame(OTEL_TRACES_SCHEMA, columns)


# --- metrics -----------------------------------------------------------------------------
class _Points:
    """The rows of one ``otel_metrics_*`` table, column by column."""

    def __init__(self, table: str) -> None:
        self.schema = OTEL_METRICS_SCHEMAS[table]
        self.lists: dict[str, list[Any]] = {name: [] for name in self.schema}
        self.rows: list[int] = []
        self.attributes = Maps()
        self.exemplar_attributes = MapLists()

    def point(
        self, row: int, metric: tuple[str, str, str], start: int, time: int,
    ) -> dict[str, list[Any]]:
        """Start a row with the common columns (metric = name, description, unit); return
        the column lists for the rest. The caller adds the row's attributes."""
        c = self.lists
        self.rows.append(row)
        c["MetricName"].append(metric[0])
        c["MetricDescription"].append(metric[1])
        c["MetricUnit"].append(metric[2])
        c["StartTimeUnix"].append(start)
        c["TimeUnix"].append(time)
        return c

    def exemplars(self, exemplars: Iterable[Any]) -> None:
        times, values, span_ids, trace_ids = [], [], [], []
        for exemplar in exemplars:
            self.exemplar_attributes.maps.add_attributes(exemplar.filtered_attributes)
            times.append(exemplar.time_unix_nano)
            values.append(_number(exemplar))
            span_ids.append(hex_or_zeros(exemplar.span_id, 8))
            trace_ids.append(hex_or_zeros(exemplar.trace_id, 16))
        self.exemplar_attributes.end_row()
        c = self.lists
        c["Exemplars.TimeUnix"].append(times)
        c["Exemplars.Value"].append(values)
        c["Exemplars.SpanId"].append(span_ids)
        c["Exemplars.TraceId"].append(trace_ids)

    def build(self, scopes: _Scopes) -> pl.DataFrame:
        columns: dict[str, Any] = dict(self.lists)
        columns["Attributes"] = self.attributes.series("Attributes")
        if "Exemplars.FilteredAttributes" in self.schema:
            columns["Exemplars.FilteredAttributes"] = self.exemplar_attributes.series(
                "Exemplars.FilteredAttributes"
            )
        scopes.expand(self.schema, self.rows, columns)
        return frame(self.schema, columns)


def _number(point: Any) -> float:
    kind = point.WhichOneof("value")
    if kind == "as_double":
        return float(point.as_double)
    if kind == "as_int":
        return float(point.as_int)
    return 0.0


def _otlp_metric(tables: dict[str, _Points], row: int, metric: Any) -> None:
    kind = metric.WhichOneof("data")
    about = (metric.name, metric.description, metric.unit)
    if kind == "gauge" or kind == "sum":
        table = ddl.OTEL_METRICS_GAUGE if kind == "gauge" else ddl.OTEL_METRICS_SUM
        data = metric.gauge if kind == "gauge" else metric.sum
        points = tables.setdefault(table, _Points(table))
        for dp in data.data_points:
            c = points.point(row, about, dp.start_time_unix_nano, dp.time_unix_nano)
            points.attributes.add_attributes(dp.attributes)
            c["Value"].append(_number(dp))
            c["Flags"].append(dp.flags)
            points.exemplars(dp.exemplars)
            if kind == "sum":
                c["AggregationTemporality"].append(data.aggregation_temporality)
                c["IsMonotonic"].append(data.is_monotonic)
    elif kind == "histogram":
        points = tables.setdefault(ddl.OTEL_METRICS_HISTOGRAM, _Points(ddl.OTEL_METRICS_HISTOGRAM))
        for dp in metric.histogram.data_points:
            c = points.point(row, about, dp.start_time_unix_nano, dp.time_unix_nano)
            points.attributes.add_attributes(dp.attributes)
            c["Count"].append(dp.count)
            c["Sum"].append(dp.sum)
            c["BucketCounts"].append(list(dp.bucket_counts))
            c["ExplicitBounds"].append(list(dp.explicit_bounds))
            points.exemplars(dp.exemplars)
            _min_max(c, dp, metric.histogram.aggregation_temporality)
    elif kind == "exponential_histogram":
        table = ddl.OTEL_METRICS_EXP_HISTOGRAM
        points = tables.setdefault(table, _Points(table))
        for dp in metric.exponential_histogram.data_points:
            c = points.point(row, about, dp.start_time_unix_nano, dp.time_unix_nano)
            points.attributes.add_attributes(dp.attributes)
            c["Count"].append(dp.count)
            c["Sum"].append(dp.sum)
            c["Scale"].append(dp.scale)
            c["ZeroCount"].append(dp.zero_count)
            c["PositiveOffset"].append(dp.positive.offset)
            c["PositiveBucketCounts"].append(list(dp.positive.bucket_counts))
            c["NegativeOffset"].append(dp.negative.offset)
            c["NegativeBucketCounts"].append(list(dp.negative.bucket_counts))
            points.exemplars(dp.exemplars)
            _min_max(c, dp, metric.exponential_histogram.aggregation_temporality)
    elif kind == "summary":
        points = tables.setdefault(ddl.OTEL_METRICS_SUMMARY, _Points(ddl.OTEL_METRICS_SUMMARY))
        for dp in metric.summary.data_points:
            c = points.point(row, about, dp.start_time_unix_nano, dp.time_unix_nano)
            points.attributes.add_attributes(dp.attributes)
            c["Count"].append(dp.count)
            c["Sum"].append(dp.sum)
            c["ValueAtQuantiles.Quantile"].append([q.quantile for q in dp.quantile_values])
            c["ValueAtQuantiles.Value"].append([q.value for q in dp.quantile_values])
            c["Flags"].append(dp.flags)
    # a metric without data (kind None) has no points: the exporter writes nothing either


def _min_max(c: dict[str, list[Any]], dp: Any, temporality: int) -> None:
    c["Flags"].append(dp.flags)
    c["Min"].append(dp.min)  # unset optional → 0, as pdata's Min()
    c["Max"].append(dp.max)
    c["AggregationTemporality"].append(temporality)


def metrics_frames(requests: Sequence[bytes]) -> dict[str, pl.DataFrame]:
    """Serialized ``ExportMetricsServiceRequest``s → one frame per ``otel_metrics_*`` table
    that has rows, keyed by table name (schemas in :data:`OTEL_METRICS_SCHEMAS`).

    Number values (int or double) become Float64; AggregationTemporality is the OTLP enum
    number (1 delta, 2 cumulative); unset histogram sum/min/max are 0, as the exporter
    writes them.
    """
    scopes = _Scopes()
    tables: dict[str, _Points] = {}
    for row, metrics in _scoped(
        scopes, ExportMetricsServiceRequest, requests, "resource_metrics", "scope_metrics", "metrics"
    ):
        for metric in metrics:
            _otlp_metric(tables, row, metric)
    return {table: points.build(scopes) for table, points in tables.items() if points.rows}


# --- Envoy metrics service ---------------------------------------------------------------
ENVOY_SCOPE_NAME = "meshloop/envoy-metrics-service"
"""ScopeName of rows from Envoy's metrics service (tells them from OTLP-sink rows)."""

_IDENTITY_KEYS = {
    "workload": "service.name",
    "namespace": "k8s.namespace.name",
    "node_id": "service.instance.id",
    "version": "service.version",
}


class _EnvoyScope:
    """Stands in for an OTLP scope: the fixed scope of Envoy metrics-service rows."""

    name = ENVOY_SCOPE_NAME
    version = ""
    attributes: tuple[Any, ...] = ()
    dropped_attributes_count = 0


def _identity_resource(identity: dict[str, str]) -> list[tuple[str, str]]:
    pairs: dict[str, str] = {}
    for key, value in identity.items():
        if value:
            pairs[_IDENTITY_KEYS.get(key, key)] = str(value)
    return list(pairs.items())


def envoy_metrics_frames(
    messages: Sequence[bytes],
    identity: dict[str, str],
    *,
    counters_as_deltas: bool = False,
    default_timestamp_ms: int = 0,
) -> dict[str, pl.DataFrame]:
    """Serialized ``envoy.service.metrics.v3.StreamMetricsMessage``s (Prometheus
    ``MetricFamily`` protos) → ``otel_metrics_*`` frames keyed by table name.

    - COUNTER → ``otel_metrics_sum``, monotonic; temporality delta when Envoy runs with
      ``report_counters_as_deltas`` (pass ``counters_as_deltas=True``), else cumulative.
    - GAUGE and UNTYPED → ``otel_metrics_gauge``.
    - HISTOGRAM → ``otel_metrics_histogram``: cumulative bucket counts become per-bucket
      counts, upper bounds the explicit bounds, the overflow bucket ``count - last``;
      temporality delta (Envoy sends each flush interval's statistics).
    - SUMMARY → ``otel_metrics_summary`` (quantiles; Envoy leaves count and sum 0).
    - GAUGE_HISTOGRAM is skipped (Envoy never sends it).

    Labels become Attributes. ``identity`` describes the node (the stream's first message
    carries it, the caller keeps it): ``workload`` → ``service.name`` (and ServiceName),
    ``namespace`` → ``k8s.namespace.name``, ``node_id`` → ``service.instance.id``,
    ``version`` → ``service.version``; other keys are copied as they are, empty values
    dropped. TimeUnix is the metric's ``timestamp_ms`` (``default_timestamp_ms`` when 0),
    StartTimeUnix the created timestamp when present, else 0.
    """
    scopes = _Scopes()
    resource = _identity_resource(identity)
    service = next((value for key, value in resource if key == "service.name"), "")
    row = scopes.add(resource, "", service, _EnvoyScope, "")
    counter_temporality = _TEMPORALITY_DELTA if counters_as_deltas else _TEMPORALITY_CUMULATIVE
    tables: dict[str, _Points] = {}
    for message in _parse(StreamMetricsMessage, messages):
        for family in message.envoy_metrics:
            _envoy_family(tables, row, family, counter_temporality, default_timestamp_ms)
    return {table: points.build(scopes) for table, points in tables.items() if points.rows}


_ENVOY_TABLES = {
    MetricType.COUNTER: ddl.OTEL_METRICS_SUM,
    MetricType.GAUGE: ddl.OTEL_METRICS_GAUGE,
    MetricType.UNTYPED: ddl.OTEL_METRICS_GAUGE,
    MetricType.HISTOGRAM: ddl.OTEL_METRICS_HISTOGRAM,
    MetricType.SUMMARY: ddl.OTEL_METRICS_SUMMARY,
}


def _envoy_family(
    tables: dict[str, _Points], row: int, family: Any, counter_temporality: int, default_ms: int,
) -> None:
    table = _ENVOY_TABLES.get(family.type)
    if table is None:
        return
    points = tables.setdefault(table, _Points(table))
    about = (_text(family.name), _text(family.help), _text(family.unit))
    for metric in family.metric:
        time_ns = (metric.timestamp_ms or default_ms) * 1_000_000
        kind = family.type
        source = (
            metric.counter if kind == MetricType.COUNTER
            else metric.histogram if kind == MetricType.HISTOGRAM
            else metric.summary if kind == MetricType.SUMMARY
            else None
        )
        start_ns = _created_ns(source)
        c = points.point(row, about, max(start_ns, 0), max(time_ns, 0))
        points.attributes.add_pairs((_text(label.name), _text(label.value)) for label in metric.label)
        if kind == MetricType.COUNTER:
            c["Value"].append(metric.counter.value)
            c["Flags"].append(0)
            c["AggregationTemporality"].append(counter_temporality)
            c["IsMonotonic"].append(True)
            points.exemplars(())
        elif kind == MetricType.HISTOGRAM:
            _envoy_histogram(c, metric.histogram)
            points.exemplars(())
        elif kind == MetricType.SUMMARY:
            summary = metric.summary
            c["Count"].append(summary.sample_count)
            c["Sum"].append(summary.sample_sum)
            c["ValueAtQuantiles.Quantile"].append([q.quantile for q in summary.quantile])
            c["ValueAtQuantiles.Value"].append([q.value for q in summary.quantile])
            c["Flags"].append(0)
        else:
            c["Value"].append(metric.gauge.value if kind == MetricType.GAUGE else metric.untyped.value)
            c["Flags"].append(0)
            points.exemplars(())


def _text(value: str | bytes) -> str:
    """A proto2 string (Prometheus' metrics.proto): the parser does not check UTF-8 and
    hands invalid text over as bytes; those become text with replacement characters."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _created_ns(source: Any) -> int:
    if source is None or not source.HasField("created_timestamp"):
        return 0
    stamp = source.created_timestamp
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


def _envoy_histogram(c: dict[str, list[Any]], histogram: Any) -> None:
    """Prometheus cumulative buckets → OTel explicit bounds and per-bucket counts."""
    total = _count(histogram.sample_count, histogram.sample_count_float)
    buckets = sorted(
        (b.upper_bound, _count(b.cumulative_count, b.cumulative_count_float))
        for b in histogram.bucket
    )
    bounds = [bound for bound, _ in buckets if bound != float("inf")]
    cumulative = [count for bound, count in buckets if bound != float("inf")]
    counts, previous = [], 0
    for running in cumulative:
        counts.append(max(running - previous, 0))
        previous = max(running, previous)
    counts.append(max(total - previous, 0))
    c["Count"].append(total)
    c["Sum"].append(histogram.sample_sum)
    c["BucketCounts"].append(counts)
    c["ExplicitBounds"].append(bounds)
    c["Flags"].append(0)
    c["Min"].append(0.0)
    c["Max"].append(0.0)
    c["AggregationTemporality"].append(_TEMPORALITY_DELTA)


def _count(integer: int, floating: float) -> int:
    """A Prometheus count: the float variant overrides when > 0."""
    if floating > 0:
        return int(min(floating, float((1 << 64) - 1)))
    return int(integer)


# --- insertion ---------------------------------------------------------------------------
