"""The generated Envoy metrics service / Prometheus model code, next to xds-protos."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from google.protobuf import descriptor_pool

from meshloop.collector.gen import metrics_pb2, metrics_service_pb2, metrics_service_pb2_grpc


def _message() -> metrics_service_pb2.StreamMetricsMessage:
    message = metrics_service_pb2.StreamMetricsMessage()
    message.identifier.node.CopyFrom(
        base_pb2.Node(id="sidecar~10.0.0.1~a.ns~ns.svc.cluster.local", cluster="a.ns")
    )
    family = message.envoy_metrics.add(name="cluster.upstream_rq", type=metrics_pb2.COUNTER)
    metric = family.metric.add(timestamp_ms=1_700_000_000_000)
    metric.label.add(name="envoy_cluster_name", value="reviews")
    metric.counter.value = 42.0
    return message


def test_stream_metrics_message_round_trips() -> None:
    parsed = metrics_service_pb2.StreamMetricsMessage.FromString(_message().SerializeToString())
    assert parsed == _message()
    assert parsed.identifier.node.cluster == "a.ns"
    family = parsed.envoy_metrics[0]
    assert (family.name, family.type) == ("cluster.upstream_rq", metrics_pb2.COUNTER)
    assert family.metric[0].counter.value == 42.0
    assert family.metric[0].label[0].value == "reviews"
    assert not family.metric[0].HasField("gauge")  # proto2: presence is tracked


def test_full_method_name_of_the_generated_stub() -> None:
    calls: list[str] = []

    class Channel:
        def stream_unary(self, method: str, **_: object) -> None:
            calls.append(method)

    metrics_service_pb2_grpc.MetricsServiceStub(Channel())
    assert calls == ["/envoy.service.metrics.v3.MetricsService/StreamMetrics"]
    service = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"]
    assert service.full_name == "envoy.service.metrics.v3.MetricsService"


def test_files_are_registered_once_under_their_canonical_names() -> None:
    pool = descriptor_pool.Default()
    ours = pool.FindFileByName("envoy/service/metrics/v3/metrics_service.proto")
    assert ours is metrics_service_pb2.DESCRIPTOR
    assert pool.FindFileByName("io/prometheus/client/metrics.proto") is metrics_pb2.DESCRIPTOR
    # the Node type is xds-protos' own, not a copy
    node_field = metrics_service_pb2.StreamMetricsMessage.Identifier.DESCRIPTOR.fields_by_name["node"]
    assert node_field.message_type is base_pb2.Node.DESCRIPTOR
    assert metrics_service_pb2.StreamMetricsMessage.__module__ == "meshloop.collector.gen.metrics_service_pb2"


def test_xds_protos_still_import_after_ours() -> None:
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.service.accesslog.v3 import als_pb2

    assert bootstrap_pb2.Bootstrap.DESCRIPTOR.full_name == "envoy.config.bootstrap.v3.Bootstrap"
    assert als_pb2.StreamAccessLogsMessage.DESCRIPTOR.file.name == "envoy/service/accesslog/v3/als.proto"
