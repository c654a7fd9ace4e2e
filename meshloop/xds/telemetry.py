"""Envoy telemetry config pointing at meshloop's collector: access loggers, stat sinks, tracing.

Pure builders of proto3-JSON dicts (Envoy's field names, ``@type`` on every ``Any``),
shared by the bootstrap (static listeners, stat sinks) and the xDS translator (access
loggers and tracing on dynamic listeners). Everything talks gRPC to one static cluster,
``meshloop_collector`` by default, which the bootstrap defines.

Envoy API references:

* gRPC access loggers: https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/access_loggers/grpc/v3/als.proto
* OpenTelemetry access logger: https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/access_loggers/open_telemetry/v3/logs_service.proto
* Metrics service sink: https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/metrics/v3/metrics_service.proto
* OpenTelemetry stat sink: https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/stat_sinks/open_telemetry/v3/open_telemetry.proto
* OpenTelemetry tracer: https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/trace/v3/opentelemetry.proto
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLLECTOR_CLUSTER = "meshloop_collector"

HTTP_GRPC_ACCESS_LOG = "envoy.access_loggers.http_grpc"
TCP_GRPC_ACCESS_LOG = "envoy.access_loggers.tcp_grpc"
OTEL_ACCESS_LOG = "envoy.access_loggers.open_telemetry"
METRICS_SERVICE_SINK = "envoy.stat_sinks.metrics_service"
OTEL_STATS_SINK = "envoy.stat_sinks.open_telemetry"
OTEL_TRACER = "envoy.tracers.opentelemetry"
STATIC_RESOURCE_DETECTOR = "envoy.tracers.opentelemetry.resource_detectors.static_config"

_TYPE = "type.googleapis.com/"
_EXTENSION_NAMES = {
    _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig": HTTP_GRPC_ACCESS_LOG,
    _TYPE + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig": TCP_GRPC_ACCESS_LOG,
    _TYPE + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig": OTEL_ACCESS_LOG,
}

#: trace-context headers worth keeping with each entry (W3C and B3); user agent,
#: x-request-id, authority, referer and x-forwarded-for are built-in ALS fields.
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
)

#: OpenTelemetry access-log attributes: key -> Envoy command operator
#: (https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage).
OTEL_LOG_ATTRIBUTES: Mapping[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "route_name": "%ROUTE_NAME%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "traceparent": "%REQ(TRACEPARENT)%",
}


def duration(seconds: float) -> str:
    """A proto3-JSON ``google.protobuf.Duration`` ("5s", "0.25s"); rejects negatives."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def grpc_service(cluster: str, initial_metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``config.core.v3.GrpcService`` over Envoy's own gRPC client to ``cluster``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/grpc_service.proto
    """
    service: dict[str, Any] = {"envoy_grpc": {"cluster_name": cluster}}
    if initial_metadata:
        service["initial_metadata"] = [{"key": k, "value": v} for k, v in initial_metadata.items()]
    return service


def _common_grpc_config(
    collector_cluster: str, log_name: str, flush_interval: float, buffer_size_bytes: int
) -> dict[str, Any]:
    """``CommonGrpcAccessLogConfig``: where and how often a gRPC access logger flushes."""
    if buffer_size_bytes < 0:
        raise ValueError(f"buffer_size_bytes cannot be negative: {buffer_size_bytes}")
    return {
        "log_name": log_name,
        "grpc_service": grpc_service(collector_cluster),
        "transport_api_version": "V3",
        "buffer_flush_interval": duration(flush_interval),
        "buffer_size_bytes": buffer_size_bytes,
    }


def http_grpc_access_log(
    collector_cluster: str = COLLECTOR_CLUSTER,
    log_name: str = "meshloop_http",
    flush_interval: float = 1.0,
    buffer_size_bytes: int = 16384,
    request_headers: Sequence[str] = TRACE_HEADERS,
    response_headers: Sequence[str] = (),
) -> dict[str, Any]:
    """Typed config of ``envoy.access_loggers.http_grpc`` (ALS v3 ``StreamAccessLogs``).

    Envoy flushes every ``flush_interval`` seconds or when ``buffer_size_bytes`` fill,
    whichever comes first (0 bytes: each entry at once). The stream's first message
    carries the identifier (node + ``log_name``). ``request_headers`` are logged into
    ``request.request_headers`` (trace context by default).
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/access_loggers/grpc/v3/als.proto#extensions-access-loggers-grpc-v3-httpgrpcaccesslogconfig
    """
    config: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
        "common_config": _common_grpc_config(collector_cluster, log_name, flush_interval, buffer_size_bytes),
    }
    if request_headers:
        config["additional_request_headers_to_log"] = list(request_headers)
    if response_headers:
        config["additional_response_headers_to_log"] = list(response_headers)
    return config


def tcp_grpc_access_log(
    collector_cluster: str = COLLECTOR_CLUSTER,
    log_name: str = "meshloop_tcp",
    flush_interval: float = 1.0,
    buffer_size_bytes: int = 16384,
) -> dict[str, Any]:
    """Typed config of ``envoy.access_loggers.tcp_grpc`` (for ``tcp_proxy`` filters).

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/access_loggers/grpc/v3/als.proto#extensions-access-loggers-grpc-v3-tcpgrpcaccesslogconfig
    """
    return {
        "@type": _TYPE + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
        "common_config": _common_grpc_config(collector_cluster, log_name, flush_interval, buffer_size_bytes),
    }


def otel_access_log(
    collector_cluster: str = COLLECTOR_CLUSTER,
    log_name: str = "meshloop_otel",
    flush_interval: float = 1.0,
    buffer_size_bytes: int = 16384,
    resource_attributes: Mapping[str, str] | None = None,
    attributes: Mapping[str, str] = OTEL_LOG_ATTRIBUTES,
) -> dict[str, Any]:
    """Typed config of ``envoy.access_loggers.open_telemetry`` (OTLP logs ``Export``).

    Each flush is one unary OTLP export; ``attributes`` map a key to an Envoy command
    operator and arrive as strings ("-" when missing). ``resource_attributes`` identify
    the sender (the node is not sent otherwise beyond Envoy's built-in labels).
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/access_loggers/open_telemetry/v3/logs_service.proto
    """
    config: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        "common_config": _common_grpc_config(collector_cluster, log_name, flush_interval, buffer_size_bytes),
        "body": {"string_value": "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE%"},
        "attributes": _key_values(attributes),
    }
    if resource_attributes:
        config["resource_attributes"] = _key_values(resource_attributes)
    return config


def _key_values(values: Mapping[str, str]) -> dict[str, Any]:
    """An OTLP ``KeyValueList`` of string values."""
    return {"values": [{"key": k, "value": {"string_value": v}} for k, v in values.items()]}


def access_log_entry(typed_config: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap a builder's typed config as a ``config.accesslog.v3.AccessLog`` list entry."""
    return {"name": _EXTENSION_NAMES[typed_config["@type"]], "typed_config": dict(typed_config)}


def static_resource_detector(attributes: Mapping[str, str]) -> dict[str, Any]:
    """OpenTelemetry resource detector with fixed attributes (identifies the node).

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/tracers/opentelemetry/resource_detectors/v3/static_config_resource_detector.proto
    """
    return {
        "name": STATIC_RESOURCE_DETECTOR,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.tracers.opentelemetry.resource_detectors.v3."
            "StaticConfigResourceDetectorConfig",
            "attributes": dict(attributes),
        },
    }


def metrics_service_sink(collector_cluster: str = COLLECTOR_CLUSTER) -> dict[str, Any]:
    """``envoy.stat_sinks.metrics_service``: one long-lived stream of Prometheus families.

    Counters as deltas, tags as labels; the identifier comes on the first message.
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/metrics/v3/metrics_service.proto
    """
    return {
        "name": METRICS_SERVICE_SINK,
        "typed_config": {
            "@type": _TYPE + "envoy.config.metrics.v3.MetricsServiceConfig",
            "grpc_service": grpc_service(collector_cluster),
            "transport_api_version": "V3",
            "emit_tags_as_labels": True,
            "report_counters_as_deltas": True,
        },
    }


def otel_stats_sink(
    resource_attributes: Mapping[str, str], collector_cluster: str = COLLECTOR_CLUSTER
) -> dict[str, Any]:
    """``envoy.stat_sinks.open_telemetry``: one unary OTLP metrics export per flush.

    The sink does not identify the node by itself: ``resource_attributes`` go into a
    static resource detector, and the node id (when given as ``service.instance.id``)
    also into the ``x-meshloop-node-id`` gRPC metadata.
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/stat_sinks/open_telemetry/v3/open_telemetry.proto
    """
    metadata = {}
    if "service.instance.id" in resource_attributes:
        metadata["x-meshloop-node-id"] = resource_attributes["service.instance.id"]
    return {
        "name": OTEL_STATS_SINK,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
            "grpc_service": grpc_service(collector_cluster, metadata),
            "resource_detectors": [static_resource_detector(resource_attributes)],
            "report_counters_as_deltas": True,
            "report_histograms_as_deltas": True,
            "emit_tags_as_attributes": True,
            "use_tag_extracted_name": True,
        },
    }


def otel_tracing(
    service_name: str,
    resource_attributes: Mapping[str, str] | None = None,
    collector_cluster: str = COLLECTOR_CLUSTER,
    sampling_percent: float = 100.0,
) -> dict[str, Any]:
    """An ``HttpConnectionManager.tracing`` block exporting spans over OTLP to meshloop.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/trace/v3/opentelemetry.proto
    """
    provider: dict[str, Any] = {
        "@type": _TYPE + "envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {**grpc_service(collector_cluster), "timeout": "1s"},
        "service_name": service_name,
    }
    if resource_attributes:
        provider["resource_detectors"] = [static_resource_detector(resource_attributes)]
    return {
        "provider": {"name": OTEL_TRACER, "typed_config": provider},
        "random_sampling": {"value": sampling_percent},
    }
