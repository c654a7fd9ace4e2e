"""OTLP and Envoy metrics frames inserted into the exporter's tables on the real engine.

Times are near now: the tables have a TTL, and rows older than it vanish on insert.
"""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshloop.accesslog import otlp
from meshloop.store import schema as ddl
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate
from tests.unit.test_otlp_frames import (
    IDENTITY,
    _envoy_message,
    _metrics_request,
    compatible,
    kv,
)

pytestmark = pytest.mark.integration

NOW = time.time_ns() // 1_000_000_000 * 1_000_000_000  # whole second, so DateTime is exact
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def _logs() -> bytes:
    request = ExportLogsServiceRequest()
    for service, severities in (("checkout", ["INFO", "ERROR", "ERROR"]), ("cart", ["ERROR"])):
        resource = request.resource_logs.add()
        resource.resource.attributes.append(kv("service.name", string_value=service))
        scope = resource.scope_logs.add()
        for i, severity in enumerate(severities):
            record = scope.log_records.add(time_unix_nano=NOW + i, severity_text=severity, trace_id=TRACE)
            record.body.string_value = f"{service} {severity} {i}"
            record.attributes.append(kv("attempt", int_value=i))
    return request.SerializeToString()


def _traces() -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(kv("service.name", string_value="frontend"))
    spans = resource.scope_spans.add().spans
    root = spans.add(
        trace_id=TRACE,
        span_id=b"\x01" * 8,
        name="GET /",
        kind=2,
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 2_000_000,
    )
    root.events.add(time_unix_nano=NOW + 10, name="cache miss").attributes.append(
        kv("key", string_value="k1")
    )
    child = spans.add(
        trace_id=TRACE,
        span_id=b"\x02" * 8,
        parent_span_id=b"\x01" * 8,
        name="SELECT",
        kind=3,
        start_time_unix_nano=NOW + 100,
        end_time_unix_nano=NOW + 900,
    )
    child.links.add(trace_id=b"\x09" * 16, span_id=b"\x03" * 8).attributes.append(
        kv("why", string_value="batch")
    )
    spans.add(trace_id=b"\x07" * 16, span_id=b"\x04" * 8, name="other", start_time_unix_nano=NOW)
    return request.SerializeToString()


def _with_now(request: bytes) -> bytes:
    """The unit tests' metrics request, its points moved to now."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    parsed = ExportMetricsServiceRequest.FromString(request)
    for resource in parsed.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    for point in getattr(metric, kind).data_points:
                        point.time_unix_nano = NOW
                        point.start_time_unix_nano = NOW - 60_000_000_000
                        for exemplar in getattr(point, "exemplars", ()):
                            exemplar.time_unix_nano = NOW
    return parsed.SerializeToString()


@pytest.fixture
def store(embedded_store: EmbeddedStore) -> EmbeddedStore:
    migrate(embedded_store)
    return embedded_store


def test_schema_constants_match_the_created_tables(store: EmbeddedStore) -> None:
    tables = {ddl.OTEL_LOGS: otlp.OTEL_LOGS_SCHEMA, ddl.OTEL_TRACES: otlp.OTEL_TRACES_SCHEMA}
    tables.update(otlp.OTEL_METRICS_SCHEMAS)
    for table, schema in tables.items():
        rows = store.query_rows(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
            {"db": store.database, "t": table},
        )
        assert [name for name, _ in rows] == list(schema.names()), table
        for name, type_ in rows:
            assert compatible(type_, schema[name]), (table, name, type_)


def test_logs_round_trip_and_grafana_log_query(store: EmbeddedStore) -> None:
    df = otlp.logs_frame([_logs()])
    assert store.insert_df(ddl.OTEL_LOGS, df, dedup_token="logs-1") == 4
    assert store.insert_df(ddl.OTEL_LOGS, df, dedup_token="logs-1") == 4  # replay
    assert store.query_rows(f"SELECT count() FROM {store.database}.otel_logs") == [(4,)]
    rows = store.query_rows(
        f"SELECT Timestamp, Body, LogAttributes['attempt'], TraceId FROM {store.database}.otel_logs "
        "WHERE ServiceName = {s:String} AND SeverityText = {sev:String} "
        "AND Timestamp >= now() - INTERVAL 1 HOUR ORDER BY Timestamp DESC",
        {"s": "checkout", "sev": "ERROR"},
    )
    assert [(body, attempt, trace) for _, body, attempt, trace in rows] == [
        ("checkout ERROR 2", "2", TRACE.hex()),
        ("checkout ERROR 1", "1", TRACE.hex()),
    ]


def test_traces_round_trip_and_grafana_trace_query(store: EmbeddedStore) -> None:
    assert store.insert_df(ddl.OTEL_TRACES, otlp.traces_frame([_traces()])) == 3
    db = store.database
    # Grafana's trace view: the time range from the lookup table, then the spans
    bounds = store.query_rows(
        f"SELECT min(Start), max(End) FROM {db}.otel_traces_trace_id_ts WHERE TraceId = {{t:String}}",
        {"t": TRACE.hex()},
    )
    assert bounds[0][0] is not None
    spans = store.query_rows(
        f"SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Duration, "
        f"Events.Name, Events.Attributes, Links.TraceId, Links.Attributes FROM {db}.otel_traces "
        "WHERE TraceId = {t:String} AND Timestamp >= {start:DateTime} - INTERVAL 1 MINUTE "
        "AND Timestamp <= {end:DateTime} + INTERVAL 1 MINUTE ORDER BY Timestamp",
        {"t": TRACE.hex(), "start": bounds[0][0], "end": bounds[0][1]},
    )
    assert [span[:6] for span in spans] == [
        ("01" * 8, "", "GET /", "Server", "frontend", 2_000_000),
        ("02" * 8, "01" * 8, "SELECT", "Client", "frontend", 800),
    ]
    assert spans[0][6] == ["cache miss"] and spans[0][7] == [{"key": "k1"}]
    assert spans[1][8] == ["09" * 16] and spans[1][9] == [{"why": "batch"}]


def test_metrics_round_trip_and_sum_query(store: EmbeddedStore) -> None:
    frames = otlp.metrics_frames([_with_now(_metrics_request().SerializeToString())])
    message = _envoy_message()
    for family in message.envoy_metrics:
        for metric in family.metric:
            metric.timestamp_ms = metric.timestamp_ms and NOW // 1_000_000
    envoy = otlp.envoy_metrics_frames(
        [message.SerializeToString()], IDENTITY, default_timestamp_ms=NOW // 1_000_000
    )
    for batch in (frames, envoy):
        for table, df in batch.items():
            store.insert_df(table, df)
    db = store.database
    counts = dict(
        store.query_rows(
            f"SELECT 'gauge', count() FROM {db}.otel_metrics_gauge UNION ALL "
            f"SELECT 'sum', count() FROM {db}.otel_metrics_sum UNION ALL "
            f"SELECT 'histogram', count() FROM {db}.otel_metrics_histogram UNION ALL "
            f"SELECT 'exp', count() FROM {db}.otel_metrics_exponential_histogram UNION ALL "
            f"SELECT 'summary', count() FROM {db}.otel_metrics_summary"
        )
    )
    assert counts == {"gauge": 3, "sum": 2, "histogram": 3, "exp": 1, "summary": 2}
    # a Grafana-style rate panel: the sum per service and metric over the last hour
    sums = store.query_rows(
        f"SELECT ServiceName, MetricName, sum(Value), any(IsMonotonic) FROM {db}.otel_metrics_sum "
        "WHERE TimeUnix >= now() - INTERVAL 1 HOUR GROUP BY ServiceName, MetricName ORDER BY ServiceName"
    )
    assert sums == [("cart", "requests", 7.0, True), ("reviews-v2", "cluster.upstream_rq", 42.0, True)]
    envoy_rows = store.query_rows(
        f"SELECT Attributes['envoy_cluster_name'], ResourceAttributes['k8s.namespace.name'], "
        f"toUnixTimestamp(TimeUnix) FROM {db}.otel_metrics_sum WHERE ServiceName = 'reviews-v2'"
    )
    assert envoy_rows == [("ratings", "shop", NOW // 1_000_000_000)]
    exemplars = store.query_rows(
        f"SELECT Exemplars.FilteredAttributes, Exemplars.TraceId, toUnixTimestamp(TimeUnix) "
        f"FROM {db}.otel_metrics_gauge WHERE MetricName = 'temp'"
    )
    assert exemplars == [([{"user": "u"}], ["01" * 16], NOW // 1_000_000_000)]
