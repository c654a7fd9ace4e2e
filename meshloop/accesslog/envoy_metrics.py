"""Envoy's metrics service (``StreamMetricsMessage``: Prometheus metric families) →
``otel_metrics_*`` rows, as the OpenTelemetry stats sink would have them; the stream's
node identity becomes the resource."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from meshloop.accesslog.otlp_common import Scopes, parse_all
from meshloop.accesslog.otlp_metrics import TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA, Points
from meshloop.collector.gen.metrics_pb2 import MetricType
from meshloop.collector.gen.metrics_service_pb2 import StreamMetricsMessage
from meshloop.store import schema as ddl

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
    scopes = Scopes()
    resource = _identity_resource(identity)
    service = next((value for key, value in resource if key == "service.name"), "")
    row = scopes.add(resource, "", service, _EnvoyScope, "")
    counter_temporality = TEMPORALITY_DELTA if counters_as_deltas else TEMPORALITY_CUMULATIVE
    tables: dict[str, Points] = {}
    for message in parse_all(StreamMetricsMessage, messages):
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
    tables: dict[str, Points], row: int, family: Any, counter_temporality: int, default_ms: int,
) -> None:
    table = _ENVOY_TABLES.get(family.type)
    if table is None:
        return
    points = tables.setdefault(table, Points(table))
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
    c["AggregationTemporality"].append(TEMPORALITY_DELTA)


def _count(integer: int, floating: float) -> int:
    """A Prometheus count: the float variant overrides when > 0."""
    if floating > 0:
        return int(min(floating, float((1 << 64) - 1)))
    return int(integer)


# --- insertion ---------------------------------------------------------------------------
