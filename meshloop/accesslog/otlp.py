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

from collections.abc import Sequence
from typing import Any

import polars as pl
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from meshloop.accesslog.envoy_metrics import ENVOY_SCOPE_NAME, envoy_metrics_frames
from meshloop.accesslog.otlp_columns import MAP, MapLists, Maps, any_string, frame, hex_or_empty
from meshloop.accesslog.otlp_common import (
    TS,
    U8,
    U64,
    DecodeError,
    S,
    Scopes,
    enum_name,
    transpose,
    walk_scopes,
)  # fmt: skip
from meshloop.accesslog.otlp_metrics import OTEL_METRICS_SCHEMAS, metrics_frames

__all__ = [
    "DecodeError", "OTEL_LOGS_SCHEMA", "OTEL_TRACES_SCHEMA", "OTEL_METRICS_SCHEMAS",
    "ENVOY_SCOPE_NAME", "logs_frame", "traces_frame", "metrics_frames", "envoy_metrics_frames",
]

if "event_name" not in LogRecord.DESCRIPTOR.fields_by_name:  # pragma: no cover - env check
    raise ImportError(
        "opentelemetry.proto is the pre-1.0 copy bundled with xds-protos (no LogRecord."
        "event_name); reinstall opentelemetry-proto over it: "
        "uv pip install --reinstall-package opentelemetry-proto opentelemetry-proto"
    )


OTEL_LOGS_SCHEMA = pl.Schema({
    "Timestamp": TS, "TraceId": S, "SpanId": S, "TraceFlags": U8, "SeverityText": S,
    "SeverityNumber": U8, "ServiceName": S, "Body": S, "ResourceSchemaUrl": S,
    "ResourceAttributes": MAP, "ScopeSchemaUrl": S, "ScopeName": S, "ScopeVersion": S,
    "ScopeAttributes": MAP, "LogAttributes": MAP, "EventName": S,
})
"""Insertable columns of ``otel_logs``, in table order."""


OTEL_TRACES_SCHEMA = pl.Schema({
    "Timestamp": TS, "TraceId": S, "SpanId": S, "ParentSpanId": S, "TraceState": S,
    "SpanName": S, "SpanKind": S, "ServiceName": S, "ResourceAttributes": MAP,
    "ScopeName": S, "ScopeVersion": S, "SpanAttributes": MAP, "Duration": U64,
    "StatusCode": S, "StatusMessage": S,
    "Events.Timestamp": pl.List(TS), "Events.Name": pl.List(S), "Events.Attributes": pl.List(MAP),
    "Links.TraceId": pl.List(S), "Links.SpanId": pl.List(S), "Links.TraceState": pl.List(S),
    "Links.Attributes": pl.List(MAP),
})
"""Insertable columns of ``otel_traces`` (Nested columns flattened), in table order."""

# pdata's ptrace.SpanKind.String() / ptrace.StatusCode.String(); unknown values → ''.
_SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_CODES = ("Unset", "Ok", "Error")


# --- logs --------------------------------------------------------------------------------
_LOG_ROW = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "Body",
    "EventName",
)


def logs_frame(requests: Sequence[bytes]) -> pl.DataFrame:
    """Serialized ``ExportLogsServiceRequest``s → ``otel_logs`` rows (:data:`OTEL_LOGS_SCHEMA`).

    Timestamp is the record's time, or its observed time when that is 0; ServiceName the
    resource's ``service.name``; Body ``AsString()`` of the body; TraceFlags and
    SeverityNumber truncated to 8 bits as the exporter's ``uint8(...)`` does.
    """
    scopes = Scopes()
    scope_rows: list[int] = []
    rows: list[tuple[Any, ...]] = []
    attributes = Maps()
    add_attributes = attributes.add_attributes
    for row, records in walk_scopes(
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
    columns = transpose(_LOG_ROW, rows)
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
            enum_name(_SPAN_KINDS, span.kind),
            end - start if end > start else 0,
            enum_name(_STATUS_CODES, status.code),
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
    scopes = Scopes()
    scope_rows: list[int] = []
    spans = _SpanColumns()
    for row, items in walk_scopes(
        scopes, ExportTraceServiceRequest, requests, "resource_spans", "scope_spans", "spans"
    ):
        scope_rows.extend([row] * len(items))
        for span in items:
            spans.add(span)
    columns = transpose(_SPAN_ROW, spans.rows)
    columns["SpanAttributes"] = spans.span_attributes.series("SpanAttributes")
    columns["Events.Attributes"] = spans.event_attributes.series("Events.Attributes")
    columns["Links.Attributes"] = spans.link_attributes.series("Links.Attributes")
    scopes.expand(OTEL_TRACES_SCHEMA, scope_rows, columns)
    return frame(OTEL_TRACES_SCHEMA, columns)
