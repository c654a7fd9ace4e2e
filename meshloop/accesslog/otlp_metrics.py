"""OTLP metrics → the OpenTelemetry Collector ClickHouse exporter's ``otel_metrics_*``
rows (``internal/metrics/*_metrics.go`` in ``exporter/clickhouseexporter``; the mapping
rules are in :mod:`meshloop.accesslog.otlp`). Envoy's metrics service fills the same
tables: :mod:`meshloop.accesslog.envoy_metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from meshloop.accesslog.otlp_columns import MAP, MapLists, Maps, frame, hex_or_zeros
from meshloop.accesslog.otlp_common import F64, I32, TS, U32, U64, S, Scopes, walk_scopes
from meshloop.store import schema as ddl

_METRIC_HEAD = {
    "ResourceAttributes": MAP, "ResourceSchemaUrl": S, "ScopeName": S, "ScopeVersion": S,
    "ScopeAttributes": MAP, "ScopeDroppedAttrCount": U32, "ScopeSchemaUrl": S,
    "ServiceName": S, "MetricName": S, "MetricDescription": S, "MetricUnit": S,
    "Attributes": MAP, "StartTimeUnix": TS, "TimeUnix": TS,
}
_EXEMPLARS = {
    "Exemplars.FilteredAttributes": pl.List(MAP), "Exemplars.TimeUnix": pl.List(TS),
    "Exemplars.Value": pl.List(F64), "Exemplars.SpanId": pl.List(S),
    "Exemplars.TraceId": pl.List(S),
}
_MIN_MAX_TEMPORALITY = {"Flags": U32, "Min": F64, "Max": F64, "AggregationTemporality": I32}
OTEL_METRICS_SCHEMAS: dict[str, pl.Schema] = {
    ddl.OTEL_METRICS_GAUGE: pl.Schema({**_METRIC_HEAD, "Value": F64, "Flags": U32, **_EXEMPLARS}),
    ddl.OTEL_METRICS_SUM: pl.Schema({
        **_METRIC_HEAD, "Value": F64, "Flags": U32, **_EXEMPLARS,
        "AggregationTemporality": I32, "IsMonotonic": pl.Boolean(),
    }),
    ddl.OTEL_METRICS_HISTOGRAM: pl.Schema({
        **_METRIC_HEAD, "Count": U64, "Sum": F64, "BucketCounts": pl.List(U64),
        "ExplicitBounds": pl.List(F64), **_EXEMPLARS, **_MIN_MAX_TEMPORALITY,
    }),
    ddl.OTEL_METRICS_EXP_HISTOGRAM: pl.Schema({
        **_METRIC_HEAD, "Count": U64, "Sum": F64, "Scale": I32, "ZeroCount": U64,
        "PositiveOffset": I32, "PositiveBucketCounts": pl.List(U64), "NegativeOffset": I32,
        "NegativeBucketCounts": pl.List(U64), **_EXEMPLARS, **_MIN_MAX_TEMPORALITY,
    }),
    ddl.OTEL_METRICS_SUMMARY: pl.Schema({
        **_METRIC_HEAD, "Count": U64, "Sum": F64, "ValueAtQuantiles.Quantile": pl.List(F64),
        "ValueAtQuantiles.Value": pl.List(F64), "Flags": U32,
    }),
}
"""Insertable columns of each ``otel_metrics_*`` table, by table name, in table order."""

TEMPORALITY_DELTA, TEMPORALITY_CUMULATIVE = 1, 2  # OTLP AggregationTemporality


# --- metrics -----------------------------------------------------------------------------
class Points:
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

    def build(self, scopes: Scopes) -> pl.DataFrame:
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


def _otlp_metric(tables: dict[str, Points], row: int, metric: Any) -> None:
    kind = metric.WhichOneof("data")
    about = (metric.name, metric.description, metric.unit)
    if kind == "gauge" or kind == "sum":
        table = ddl.OTEL_METRICS_GAUGE if kind == "gauge" else ddl.OTEL_METRICS_SUM
        data = metric.gauge if kind == "gauge" else metric.sum
        points = tables.setdefault(table, Points(table))
        for dp in data.data_points:
            c = _data_point(points, row, about, dp)
            c["Value"].append(_number(dp))
            c["Flags"].append(dp.flags)
            points.exemplars(dp.exemplars)
            if kind == "sum":
                c["AggregationTemporality"].append(data.aggregation_temporality)
                c["IsMonotonic"].append(data.is_monotonic)
    elif kind == "histogram":
        points = tables.setdefault(ddl.OTEL_METRICS_HISTOGRAM, Points(ddl.OTEL_METRICS_HISTOGRAM))
        for dp in metric.histogram.data_points:
            c = _counted_point(points, row, about, dp)
            c["BucketCounts"].append(list(dp.bucket_counts))
            c["ExplicitBounds"].append(list(dp.explicit_bounds))
            points.exemplars(dp.exemplars)
            _min_max(c, dp, metric.histogram.aggregation_temporality)
    elif kind == "exponential_histogram":
        table = ddl.OTEL_METRICS_EXP_HISTOGRAM
        points = tables.setdefault(table, Points(table))
        for dp in metric.exponential_histogram.data_points:
            c = _counted_point(points, row, about, dp)
            c["Scale"].append(dp.scale)
            c["ZeroCount"].append(dp.zero_count)
            c["PositiveOffset"].append(dp.positive.offset)
            c["PositiveBucketCounts"].append(list(dp.positive.bucket_counts))
            c["NegativeOffset"].append(dp.negative.offset)
            c["NegativeBucketCounts"].append(list(dp.negative.bucket_counts))
            points.exemplars(dp.exemplars)
            _min_max(c, dp, metric.exponential_histogram.aggregation_temporality)
    elif kind == "summary":
        points = tables.setdefault(ddl.OTEL_METRICS_SUMMARY, Points(ddl.OTEL_METRICS_SUMMARY))
        for dp in metric.summary.data_points:
            c = _counted_point(points, row, about, dp)
            c["ValueAtQuantiles.Quantile"].append([q.quantile for q in dp.quantile_values])
            c["ValueAtQuantiles.Value"].append([q.value for q in dp.quantile_values])
            c["Flags"].append(dp.flags)
    # a metric without data (kind None) has no points: the exporter writes nothing either


def _data_point(points: Points, row: int, about: tuple[str, str, str], dp: Any) -> dict[str, list[Any]]:
    """Start the row of data point ``dp`` (its times and attributes); return the columns."""
    c = points.point(row, about, dp.start_time_unix_nano, dp.time_unix_nano)
    points.attributes.add_attributes(dp.attributes)
    return c


def _counted_point(points: Points, row: int, about: tuple[str, str, str], dp: Any) -> dict[str, list[Any]]:
    """:func:`_data_point` with ``Count`` and ``Sum`` (histograms and summaries)."""
    c = _data_point(points, row, about, dp)
    c["Count"].append(dp.count)
    c["Sum"].append(dp.sum)
    return c


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
    scopes = Scopes()
    tables: dict[str, Points] = {}
    for row, metrics in walk_scopes(
        scopes, ExportMetricsServiceRequest, requests, "resource_metrics", "scope_metrics", "metrics"
    ):
        for metric in metrics:
            _otlp_metric(tables, row, metric)
    return {table: points.build(scopes) for table, points in tables.items() if points.rows}
