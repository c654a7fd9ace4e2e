"""OTLP / Envoy metrics batches → frames in the ClickHouse exporter's table shapes."""

from __future__ import annotations

import math
import re
from typing import Any, cast

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from meshloop.accesslog import otlp
from meshloop.accesslog.otlp_columns import go_float
from meshloop.collector.gen import metrics_pb2
from meshloop.collector.gen.metrics_service_pb2 import StreamMetricsMessage
from meshloop.store import schema as ddl
from meshloop.store import schema_otel

T0 = 1_700_000_000_000_000_000  # ns


def kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def as_dict(pairs: list[dict[str, str]]) -> dict[str, str]:
    return {pair["key"]: pair["value"] for pair in pairs}


# --- schema constants vs. the DDL ------------------------------------------------------
_STOP = (" CODEC(", " COMMENT ", " MATERIALIZED ", " ALIAS ", " DEFAULT ")


def _split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def ddl_columns(statement: str) -> list[tuple[str, str]]:
    """Insertable (name, type) pairs of a CREATE TABLE, Nested columns flattened."""
    body = statement[statement.index("(\n") + 2 : statement.rindex("\n)")]
    out = []
    for item in body.split(",\n"):
        item = item.strip()
        if item.startswith("INDEX "):
            continue
        match = re.match(r"`([^`]+)`|(\S+)", item)
        assert match
        name = match.group(1) or match.group(2)
        rest, depth = item[match.end() :].strip(), 0
        end = len(rest)
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and any(rest.startswith(stop, i) for stop in _STOP):
                end = i
                break
        if " MATERIALIZED " in rest or " ALIAS " in rest:
            continue
        type_ = rest[:end].strip()
        if type_.startswith("Nested("):
            for sub in _split_top(type_[len("Nested(") : -1]):
                sub_name, sub_type = sub.split(" ", 1)
                out.append((f"{name}.{sub_name}", f"Array({sub_type.strip()})"))
        else:
            out.append((name, type_))
    return out


def compatible(ch: str, dtype: pl.DataType) -> bool:
    scalar = {
        "String": pl.String,
        "LowCardinality(String)": pl.String,
        "UInt8": pl.UInt8,
        "UInt32": pl.UInt32,
        "UInt64": pl.UInt64,
        "Int32": pl.Int32,
        "Float64": pl.Float64,
        "Boolean": pl.Boolean,
        "Bool": pl.Boolean,
    }
    if ch in scalar:
        return dtype == scalar[ch]
    if ch == "DateTime64(9)":
        return dtype == pl.Datetime("ns")
    if ch == "DateTime":
        return isinstance(dtype, pl.Datetime)
    if ch == "Map(LowCardinality(String), String)":
        return dtype == pl.List(pl.Struct({"key": pl.String, "value": pl.String}))
    if ch.startswith("Array("):
        inner = cast(pl.DataType, dtype.inner) if isinstance(dtype, pl.List) else None
        return inner is not None and compatible(ch[len("Array(") : -1], inner)
    return False


def _tables() -> list[tuple[str, list[str], pl.Schema]]:
    metrics = schema_otel.otel_metrics_ddl("db")
    out = [
        (ddl.OTEL_LOGS, schema_otel.otel_logs_ddl("db"), otlp.OTEL_LOGS_SCHEMA),
        (ddl.OTEL_TRACES, schema_otel.otel_traces_ddl("db")[:1], otlp.OTEL_TRACES_SCHEMA),
    ]
    for table, schema in otlp.OTEL_METRICS_SCHEMAS.items():
        statement = [s for s in metrics if f"db.{table}\n" in s]
        out.append((table, statement, schema))
    return out


@pytest.mark.parametrize(("table", "statements", "schema"), _tables(), ids=lambda v: str(v)[:30])
def test_schema_constant_matches_the_ddl(table: str, statements: list[str], schema: pl.Schema) -> None:
    assert len(statements) == 1, table
    columns = ddl_columns(statements[0])
    assert [name for name, _ in columns] == list(schema.names()), table
    for name, ch_type in columns:
        assert compatible(ch_type, schema[name]), (table, name, ch_type, schema[name])
    assert set(otlp.OTEL_METRICS_SCHEMAS) == {
        ddl.OTEL_METRICS_GAUGE,
        ddl.OTEL_METRICS_SUM,
        ddl.OTEL_METRICS_HISTOGRAM,
        ddl.OTEL_METRICS_EXP_HISTOGRAM,
        ddl.OTEL_METRICS_SUMMARY,
    }


# --- AnyValue → string, as pdata's AsString ---------------------------------------------
ANY_VALUES = [
    (AnyValue(string_value="plain <b>&</b>"), "plain <b>&</b>"),
    (AnyValue(), ""),
    (AnyValue(bool_value=True), "true"),
    (AnyValue(bool_value=False), "false"),
    (AnyValue(int_value=-42), "-42"),
    (AnyValue(double_value=1.5), "1.5"),
    (AnyValue(double_value=100.0), "100"),
    (AnyValue(double_value=-0.0), "-0"),
    (AnyValue(double_value=1e20), "100000000000000000000"),
    (AnyValue(double_value=1e21), "1e+21"),
    (AnyValue(double_value=1e-7), "1e-7"),
    (AnyValue(double_value=1.5e-10), "1.5e-10"),
    (AnyValue(double_value=0.000001), "0.000001"),
    (AnyValue(double_value=math.inf), "json: unsupported value: +Inf"),
    (AnyValue(double_value=math.nan), "json: unsupported value: NaN"),
    (AnyValue(bytes_value=b"\x00\xffhi"), "AP9oaQ=="),
    (
        AnyValue(
            array_value=ArrayValue(
                values=[
                    AnyValue(string_value="a"),
                    AnyValue(int_value=1),
                    AnyValue(double_value=2.0),
                    AnyValue(bool_value=True),
                    AnyValue(),
                    AnyValue(bytes_value=b"\x01"),
                ]
            )
        ),
        '["a",1,2,true,null,"AQ=="]',
    ),
    (
        AnyValue(
            kvlist_value=KeyValueList(
                values=[
                    kv("z", string_value="<&>\u2028é"),
                    kv("a", array_value=ArrayValue()),
                    kv("m", kvlist_value=KeyValueList(values=[kv("y", double_value=1e-7)])),
                    kv("a", int_value=7),  # duplicate key: the last one wins, as in a Go map
                ]
            )
        ),
        '{"a":7,"m":{"y":1e-7},"z":"<&>\\u2028é"}',
    ),
    (AnyValue(kvlist_value=KeyValueList()), "{}"),
    (AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=math.nan)])), ""),
]


@pytest.mark.parametrize(("value", "expected"), ANY_VALUES)
def test_body_and_attributes_render_like_pdata_as_string(value: AnyValue, expected: str) -> None:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=T0)
    record.body.CopyFrom(value)
    record.attributes.add(key="v").value.CopyFrom(value)
    row = otlp.logs_frame([request.SerializeToString()]).row(0, named=True)
    assert row["Body"] == expected
    assert row["LogAttributes"] == [{"key": "v", "value": expected}]


@pytest.mark.parametrize("value", [0.1, 123.456, 1e15, 1e16, 2.5e17, 5e-6, 1e-6, 123456789.125])
def test_go_float_uses_es6_cutoffs(value: float) -> None:
    text = go_float(value)
    assert float(text) == value
    assert ("e" in text) == (value < 1e-6 or value >= 1e21)
    assert not text.endswith(".0")


# --- logs ------------------------------------------------------------------------------
def _logs_request() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    first = request.resource_logs.add(schema_url="https://res/1")
    first.resource.attributes.extend(
        [kv("service.name", string_value="checkout"), kv("k8s.pod.name", string_value="p1")]
    )
    scope = first.scope_logs.add(schema_url="https://scope/1")
    scope.scope.name, scope.scope.version = "lib", "1.2"
    scope.scope.attributes.append(kv("lib.attr", int_value=1))
    scope.log_records.add(
        time_unix_nano=T0,
        observed_time_unix_nano=T0 + 5,
        severity_text="ERROR",
        severity_number=17,
        flags=0x101,
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
        event_name="app.crash",
    ).body.string_value = "boom"
    scope.log_records.add(observed_time_unix_nano=T0 + 7, severity_number=-1)  # no time
    other = first.scope_logs.add()
    other.scope.name = "other"
    other.log_records.add(trace_id=bytes(16))  # no times at all, all-zero trace id
    second = request.resource_logs.add()  # no service.name
    second.resource.attributes.append(kv("host.name", string_value="h"))
    second.scope_logs.add().log_records.add(time_unix_nano=T0 + 9)
    return request


def test_logs_map_every_column() -> None:
    df = otlp.logs_frame([_logs_request().SerializeToString()])
    assert df.schema == otlp.OTEL_LOGS_SCHEMA
    rows = df.to_dicts()
    assert len(rows) == 4
    first = rows[0]
    assert first["Timestamp"].timestamp() == pytest.approx(T0 / 1e9)
    assert (first["TraceId"], first["SpanId"]) == (bytes(range(1, 17)).hex(), bytes(range(1, 9)).hex())
    assert (first["TraceFlags"], first["SeverityText"], first["SeverityNumber"]) == (1, "ERROR", 17)
    assert (first["ServiceName"], first["Body"], first["EventName"]) == ("checkout", "boom", "app.crash")
    assert (first["ResourceSchemaUrl"], first["ScopeSchemaUrl"]) == ("https://res/1", "https://scope/1")
    assert (first["ScopeName"], first["ScopeVersion"]) == ("lib", "1.2")
    assert as_dict(first["ResourceAttributes"]) == {"service.name": "checkout", "k8s.pod.name": "p1"}
    assert as_dict(first["ScopeAttributes"]) == {"lib.attr": "1"}
    # missing time → observed time; missing both → the epoch; uint8 wrap of -1
    ns = df["Timestamp"].cast(pl.Int64).to_list()
    assert ns == [T0, T0 + 7, 0, T0 + 9]
    assert rows[1]["SeverityNumber"] == 255
    assert (rows[2]["ScopeName"], rows[2]["ScopeAttributes"], rows[2]["TraceId"]) == ("other", [], "")
    assert rows[3]["ServiceName"] == "" and as_dict(rows[3]["ResourceAttributes"]) == {"host.name": "h"}


def test_several_requests_concatenate_in_order() -> None:
    payload = _logs_request().SerializeToString()
    df = otlp.logs_frame([payload, payload])
    assert df.height == 8
    assert df["ServiceName"].to_list() == ["checkout"] * 3 + [""] + ["checkout"] * 3 + [""]


def test_service_name_that_is_not_a_string_is_rendered() -> None:
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.append(kv("service.name", int_value=7))
    resource.scope_logs.add().log_records.add(time_unix_nano=T0)
    assert otlp.logs_frame([request.SerializeToString()])["ServiceName"].to_list() == ["7"]


def test_empty_batch_gives_empty_frames_with_the_schema() -> None:
    assert otlp.logs_frame([]).schema == otlp.OTEL_LOGS_SCHEMA
    assert otlp.traces_frame([b""]).schema == otlp.OTEL_TRACES_SCHEMA
    assert otlp.metrics_frames([b""]) == {}
    assert otlp.envoy_metrics_frames([], {}) == {}


# --- traces ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (0, "Unspecified"),
        (1, "Internal"),
        (2, "Server"),
        (3, "Client"),
        (4, "Producer"),
        (5, "Consumer"),
        (9, ""),
    ],
)
def test_span_kind_names(kind: int, name: str) -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(kind=kind)  # type: ignore[arg-type]
    assert otlp.traces_frame([request.SerializeToString()])["SpanKind"].to_list() == [name]


@pytest.mark.parametrize(("code", "name"), [(0, "Unset"), (1, "Ok"), (2, "Error"), (5, "")])
def test_status_code_names(code: int, name: str) -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add().status.code = code  # type: ignore[assignment]
    assert otlp.traces_frame([request.SerializeToString()])["StatusCode"].to_list() == [name]


def test_spans_with_events_and_links() -> None:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(kv("service.name", string_value="api"))
    scope = resource.scope_spans.add()
    scope.scope.name, scope.scope.version = "tracer", "2"
    span = scope.spans.add(
        trace_id=b"\xaa" * 16,
        span_id=b"\x01" * 8,
        parent_span_id=b"\x02" * 8,
        trace_state="k=v",
        name="GET /",
        kind=2,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 1500,
    )
    span.attributes.append(kv("http.status_code", int_value=500))
    span.status.code, span.status.message = 2, "bad"  # type: ignore[assignment]
    span.events.add(time_unix_nano=T0 + 10, name="retry").attributes.append(kv("n", int_value=1))
    span.events.add(time_unix_nano=T0 + 20, name="give up")
    link = span.links.add(trace_id=b"\xbb" * 16, span_id=b"\x03" * 8, trace_state="a=b")
    link.attributes.append(kv("why", string_value="batch"))
    scope.spans.add(name="backwards", start_time_unix_nano=T0 + 5, end_time_unix_nano=T0)
    df = otlp.traces_frame([request.SerializeToString()])
    assert df.schema == otlp.OTEL_TRACES_SCHEMA
    row, backwards = df.to_dicts()
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == ("aa" * 16, "01" * 8, "02" * 8)
    assert (row["TraceState"], row["SpanName"], row["SpanKind"]) == ("k=v", "GET /", "Server")
    assert (row["ServiceName"], row["ScopeName"], row["ScopeVersion"]) == ("api", "tracer", "2")
    assert (row["Duration"], row["StatusCode"], row["StatusMessage"]) == (1500, "Error", "bad")
    assert as_dict(row["SpanAttributes"]) == {"http.status_code": "500"}
    assert row["Events.Name"] == ["retry", "give up"]
    assert df["Events.Timestamp"].list.eval(pl.element().cast(pl.Int64)).to_list()[0] == [T0 + 10, T0 + 20]
    assert row["Events.Attributes"] == [[{"key": "n", "value": "1"}], []]
    assert (row["Links.TraceId"], row["Links.SpanId"], row["Links.TraceState"]) == (
        ["bb" * 16],
        ["03" * 8],
        ["a=b"],
    )
    assert row["Links.Attributes"] == [[{"key": "why", "value": "batch"}]]
    assert backwards["Duration"] == 0  # Go would wrap the uint64 subtraction
    assert backwards["Events.Attributes"] == [] and backwards["Links.TraceId"] == []


def test_store_arrow_turns_nested_attribute_lists_into_maps() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.events.add(name="e").attributes.append(kv("a", string_value="b"))
    span.attributes.append(kv("top", string_value="level"))
    from meshloop.store.base import as_clickhouse_arrow

    table = as_clickhouse_arrow(otlp.traces_frame([request.SerializeToString()]).to_arrow())
    assert str(table.schema.field("Events.Attributes").type).startswith("large_list<item: map<")
    assert table.column("Events.Attributes").to_pylist() == [[[("a", "b")]]]
    assert table.column("SpanAttributes").to_pylist() == [[("top", "level")]]


# --- OTLP metrics ------------------------------------------------------------------------
def _metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add(schema_url="r")
    resource.resource.attributes.append(kv("service.name", string_value="cart"))
    scope = resource.scope_metrics.add(schema_url="s")
    scope.scope.name, scope.scope.dropped_attributes_count = "meter", 3
    metrics = scope.metrics
    gauge = metrics.add(name="temp", description="d", unit="C").gauge.data_points.add(
        as_double=21.5,
        time_unix_nano=T0,
        start_time_unix_nano=T0 - 10,
        flags=1,
    )
    gauge.attributes.append(kv("room", string_value="a"))
    exemplar = gauge.exemplars.add(as_int=3, time_unix_nano=T0, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    exemplar.filtered_attributes.append(kv("user", string_value="u"))
    total = metrics.add(name="requests")
    total.sum.aggregation_temporality, total.sum.is_monotonic = 1, True  # type: ignore[assignment]
    total.sum.data_points.add(as_int=7, time_unix_nano=T0)
    histogram = metrics.add(name="latency").histogram
    histogram.aggregation_temporality = 2  # type: ignore[assignment]
    histogram.data_points.add(
        count=6,
        sum=12.5,
        bucket_counts=[1, 2, 3],
        explicit_bounds=[1.0, 5.0],
        min=0.5,
        max=9.0,
        time_unix_nano=T0,
    )
    histogram.data_points.add(count=0, time_unix_nano=T0)  # no sum/min/max
    exp = metrics.add(name="sizes").exponential_histogram
    exp.aggregation_temporality = 1  # type: ignore[assignment]
    point = exp.data_points.add(count=5, sum=20.0, scale=3, zero_count=1, time_unix_nano=T0, min=1, max=8)
    point.positive.offset, point.negative.offset = 2, -1
    point.positive.bucket_counts.extend([1, 2])
    point.negative.bucket_counts.extend([1])
    summary = metrics.add(name="rpc").summary.data_points.add(count=4, sum=2.0, time_unix_nano=T0)
    summary.quantile_values.add(quantile=0.5, value=0.4)
    summary.quantile_values.add(quantile=0.99, value=0.9)
    metrics.add(name="no data")
    return request


def test_each_otlp_metric_type_lands_in_its_table() -> None:
    frames = otlp.metrics_frames([_metrics_request().SerializeToString()])
    assert set(frames) == set(otlp.OTEL_METRICS_SCHEMAS)
    for table, df in frames.items():
        assert df.schema == otlp.OTEL_METRICS_SCHEMAS[table]
        assert set(df["ServiceName"]) == {"cart"} and set(df["ScopeDroppedAttrCount"]) == {3}
        assert set(df["ResourceSchemaUrl"]) == {"r"} and set(df["ScopeSchemaUrl"]) == {"s"}
    gauge = frames[ddl.OTEL_METRICS_GAUGE].row(0, named=True)
    assert (gauge["MetricName"], gauge["MetricDescription"], gauge["MetricUnit"]) == ("temp", "d", "C")
    assert (gauge["Value"], gauge["Flags"], as_dict(gauge["Attributes"])) == (21.5, 1, {"room": "a"})
    assert gauge["Exemplars.Value"] == [3.0]
    assert (gauge["Exemplars.TraceId"], gauge["Exemplars.SpanId"]) == (["01" * 16], ["02" * 8])
    assert gauge["Exemplars.FilteredAttributes"] == [[{"key": "user", "value": "u"}]]
    assert frames[ddl.OTEL_METRICS_GAUGE]["StartTimeUnix"].cast(pl.Int64).to_list() == [T0 - 10]
    total = frames[ddl.OTEL_METRICS_SUM].row(0, named=True)
    assert (total["Value"], total["AggregationTemporality"], total["IsMonotonic"]) == (7.0, 1, True)
    first, empty = frames[ddl.OTEL_METRICS_HISTOGRAM].to_dicts()
    assert (first["Count"], first["Sum"], first["BucketCounts"], first["ExplicitBounds"]) == (
        6,
        12.5,
        [1, 2, 3],
        [1.0, 5.0],
    )
    assert (first["Min"], first["Max"], first["AggregationTemporality"]) == (0.5, 9.0, 2)
    assert (empty["Sum"], empty["Min"], empty["Max"], empty["BucketCounts"]) == (0.0, 0.0, 0.0, [])
    exp = frames[ddl.OTEL_METRICS_EXP_HISTOGRAM].row(0, named=True)
    assert (exp["Scale"], exp["ZeroCount"], exp["PositiveOffset"], exp["NegativeOffset"]) == (3, 1, 2, -1)
    assert (exp["PositiveBucketCounts"], exp["NegativeBucketCounts"]) == ([1, 2], [1])
    assert (exp["Min"], exp["Max"], exp["AggregationTemporality"]) == (1.0, 8.0, 1)
    summary = frames[ddl.OTEL_METRICS_SUMMARY].row(0, named=True)
    assert (summary["Count"], summary["Sum"]) == (4, 2.0)
    assert summary["ValueAtQuantiles.Quantile"] == [0.5, 0.99]
    assert summary["ValueAtQuantiles.Value"] == [0.4, 0.9]


def test_only_tables_with_points_are_returned() -> None:
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.add(name="g").gauge.data_points.add(as_int=1)
    assert list(otlp.metrics_frames([request.SerializeToString()])) == [ddl.OTEL_METRICS_GAUGE]


# --- Envoy metrics service -----------------------------------------------------------
IDENTITY = {
    "workload": "reviews-v2",
    "namespace": "shop",
    "node_id": "sidecar~10.0.0.1~r.shop~shop.svc",
    "cluster": "",
}
MS = 1_700_000_000_000


def _envoy_message() -> StreamMetricsMessage:
    message = StreamMetricsMessage()
    counter = message.envoy_metrics.add(name="cluster.upstream_rq", type=metrics_pb2.COUNTER, help="requests")
    metric = counter.metric.add(timestamp_ms=MS)
    metric.label.add(name="envoy_cluster_name", value="ratings")
    metric.counter.value = 42
    gauge = message.envoy_metrics.add(name="server.live", type=metrics_pb2.GAUGE)
    gauge.metric.add(timestamp_ms=MS).gauge.value = 1
    gauge.metric.add().gauge.value = 2  # no timestamp → default
    histogram = message.envoy_metrics.add(name="cluster.upstream_rq_time", type=metrics_pb2.HISTOGRAM)
    point = histogram.metric.add(timestamp_ms=MS)
    point.label.add(name="envoy_cluster_name", value="ratings")
    point.histogram.sample_count, point.histogram.sample_sum = 10, 123.0
    for bound, cumulative in [(0.5, 1), (1.0, 4), (5.0, 9)]:
        point.histogram.bucket.add(upper_bound=bound, cumulative_count=cumulative)
    summary = message.envoy_metrics.add(name="cluster.upstream_rq_time", type=metrics_pb2.SUMMARY)
    quantiles = summary.metric.add(timestamp_ms=MS).summary
    quantiles.quantile.add(quantile=0.5, value=2.0)
    quantiles.quantile.add(quantile=0.99, value=9.5)
    message.envoy_metrics.add(name="odd", type=metrics_pb2.GAUGE_HISTOGRAM).metric.add()
    return message


@pytest.mark.parametrize(("deltas", "temporality"), [(False, 2), (True, 1)])
def test_envoy_metrics_map_to_otel_tables(deltas: bool, temporality: int) -> None:
    frames = otlp.envoy_metrics_frames(
        [_envoy_message().SerializeToString()],
        IDENTITY,
        counters_as_deltas=deltas,
        default_timestamp_ms=MS + 1000,
    )
    assert set(frames) == {
        ddl.OTEL_METRICS_SUM,
        ddl.OTEL_METRICS_GAUGE,
        ddl.OTEL_METRICS_HISTOGRAM,
        ddl.OTEL_METRICS_SUMMARY,
    }
    for table, df in frames.items():
        assert df.schema == otlp.OTEL_METRICS_SCHEMAS[table]
        assert set(df["ServiceName"]) == {"reviews-v2"}
        assert set(df["ScopeName"]) == {otlp.ENVOY_SCOPE_NAME}
        assert as_dict(df["ResourceAttributes"][0].to_list()) == {
            "service.name": "reviews-v2",
            "k8s.namespace.name": "shop",
            "service.instance.id": "sidecar~10.0.0.1~r.shop~shop.svc",
        }
    total = frames[ddl.OTEL_METRICS_SUM].row(0, named=True)
    assert (total["MetricName"], total["MetricDescription"], total["Value"]) == (
        "cluster.upstream_rq",
        "requests",
        42.0,
    )
    assert (total["IsMonotonic"], total["AggregationTemporality"]) == (True, temporality)
    assert as_dict(total["Attributes"]) == {"envoy_cluster_name": "ratings"}
    assert frames[ddl.OTEL_METRICS_SUM]["TimeUnix"].cast(pl.Int64).to_list() == [MS * 1_000_000]
    gauges = frames[ddl.OTEL_METRICS_GAUGE]
    assert gauges["Value"].to_list() == [1.0, 2.0]
    assert gauges["TimeUnix"].cast(pl.Int64).to_list() == [MS * 1_000_000, (MS + 1000) * 1_000_000]
    histogram = frames[ddl.OTEL_METRICS_HISTOGRAM].row(0, named=True)
    assert histogram["ExplicitBounds"] == [0.5, 1.0, 5.0]
    assert histogram["BucketCounts"] == [1, 3, 5, 1]  # per bucket; the overflow is count - 9
    assert (histogram["Count"], histogram["Sum"], histogram["AggregationTemporality"]) == (10, 123.0, 1)
    summary = frames[ddl.OTEL_METRICS_SUMMARY].row(0, named=True)
    assert (summary["ValueAtQuantiles.Quantile"], summary["ValueAtQuantiles.Value"]) == (
        [0.5, 0.99],
        [2.0, 9.5],
    )


def test_envoy_histogram_with_an_inf_bucket_and_float_counts() -> None:
    message = StreamMetricsMessage()
    family = message.envoy_metrics.add(name="h", type=metrics_pb2.HISTOGRAM)
    histogram = family.metric.add(timestamp_ms=MS).histogram
    histogram.sample_count_float = 5.0
    histogram.bucket.add(upper_bound=math.inf, cumulative_count=5)
    histogram.bucket.add(upper_bound=2.0, cumulative_count_float=3.0)
    row = otlp.envoy_metrics_frames([message.SerializeToString()], {})[ddl.OTEL_METRICS_HISTOGRAM].row(
        0, named=True
    )
    assert (row["ExplicitBounds"], row["BucketCounts"], row["Count"]) == ([2.0], [3, 2], 5)
    assert row["ServiceName"] == "" and row["ResourceAttributes"] == []


# --- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("convert", "type_name"),
    [
        (otlp.logs_frame, "ExportLogsServiceRequest"),
        (otlp.traces_frame, "ExportTraceServiceRequest"),
        (otlp.metrics_frames, "ExportMetricsServiceRequest"),
        (lambda payloads: otlp.envoy_metrics_frames(payloads, {}), "StreamMetricsMessage"),
    ],
)
def test_garbage_raises_decode_error_naming_request_and_type(convert: Any, type_name: str) -> None:
    with pytest.raises(otlp.DecodeError, match=rf"request 1: not a valid \S*{type_name}"):
        convert([b"", b"\xff\xff\xff\xff garbage"])
    with pytest.raises(otlp.DecodeError, match="request 0"):
        convert(["not bytes"])


_CONVERTERS = [
    otlp.logs_frame,
    otlp.traces_frame,
    otlp.metrics_frames,
    lambda payloads: otlp.envoy_metrics_frames(payloads, IDENTITY),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=3), st.sampled_from(range(len(_CONVERTERS))))
def test_random_bytes_raise_nothing_but_decode_error(payloads: list[bytes], which: int) -> None:
    try:
        _CONVERTERS[which](payloads)
    except otlp.DecodeError:
        pass


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda cut, flip, tail: (
            bytes(b ^ flip if i == cut % max(len(seed), 1) else b for i, b in enumerate(seed)) + tail
        ),
        st.integers(0, 10_000),
        st.integers(0, 255),
        st.binary(max_size=8),
    )


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_valid_requests_raise_nothing_but_decode_error(data: st.DataObject) -> None:
    # random bytes rarely parse; mutations of real requests reach deep into the mapping
    seeds = [
        (otlp.logs_frame, _logs_request().SerializeToString()),
        (otlp.metrics_frames, _metrics_request().SerializeToString()),
        (_CONVERTERS[3], _envoy_message().SerializeToString()),
    ]
    convert, seed = data.draw(st.sampled_from(seeds))
    try:
        convert([data.draw(_mutations(seed))])
    except otlp.DecodeError:
        pass
