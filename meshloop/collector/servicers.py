"""gRPC servicers: receive raw messages, keep stream identity, hand bytes to intake.

No business logic here and no waiting on the store: a handler parses only what it
must (a stream's first message for its ``identifier``; a unary OTLP request to reject
malformed input at once), appends the raw bytes to the write-ahead log through
:class:`~meshloop.collector.intake.Intake`, and answers. Later messages of a stream are
not parsed here: the flusher decodes them in bulk, and quarantines what it cannot.

Services (method names as the protos define them):
- ``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``
  (https://www.envoyproxy.io/docs/envoy/latest/api-v3/service/accesslog/v3/als.proto)
- ``envoy.service.metrics.v3.MetricsService/StreamMetrics``
  (https://www.envoyproxy.io/docs/envoy/latest/api-v3/service/metrics/v3/metrics_service.proto)
- ``opentelemetry.proto.collector.{logs,trace,metrics}.v1.*Service/Export`` (OTLP/gRPC,
  https://opentelemetry.io/docs/specs/otlp/#otlpgrpc)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from meshloop.accesslog.identity import StreamIdentity, stream_identity
from meshloop.collector.intake import Intake, Refused
from meshloop.collector.metrics import MESSAGES_REFUSED, STREAMS_ACTIVE
from meshloop.collector.sources import Source
from meshloop.collector.streams import StreamRegistry

log = logging.getLogger(__name__)


def identity_meta(identifier: Any) -> bytes:
    """The compact stream identity stored beside each WAL record (a few hundred bytes,
    instead of the node's tens of KB of extension list)."""
    from google.protobuf.json_format import MessageToDict

    node = identifier.node
    metadata = MessageToDict(node.metadata) if node.HasField("metadata") else {}
    log_name = getattr(identifier, "log_name", "")  # the metrics service has none
    identity: StreamIdentity = stream_identity(node.id, node.cluster, metadata, log_name)
    return json.dumps(asdict(identity), separators=(",", ":")).encode()


async def _refuse(
    context: grpc.aio.ServicerContext, source: Source, reason: str, code: Any, detail: str
) -> None:
    MESSAGES_REFUSED.labels(source.label, reason).inc()
    await context.abort(code, detail)


def _stream_handler(
    intake: Intake, streams: StreamRegistry, source: Source, message_type: type[Message], method: str
) -> Any:
    """A stream-unary handler: identity from the first message, raw bytes to intake."""
    type_name = message_type.DESCRIPTOR.full_name

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        meta: bytes | None = None
        STREAMS_ACTIVE.labels(source.label).inc()
        stream_id, info = streams.open(source.label, context.peer())
        try:
            async for raw in requests:
                if meta is None:
                    try:
                        first = message_type.FromString(raw)
                    except ProtobufDecodeError as exc:
                        problem = (
                            f"{method}: message 0 from {context.peer()} is not a valid {type_name}: {exc}"
                        )
                        await _refuse(context, source, "malformed", grpc.StatusCode.INVALID_ARGUMENT, problem)
                        return b""
                    if not first.HasField("identifier"):
                        problem = f"{method}: the first message of a stream must carry 'identifier' (node)"
                        await _refuse(
                            context, source, "no_identifier", grpc.StatusCode.INVALID_ARGUMENT, problem
                        )
                        return b""
                    meta = identity_meta(first.identifier)
                    identity = json.loads(meta)
                    info.node_id, info.workload = identity["node_id"], identity["workload"]
                    info.namespace = identity["namespace"]
                try:
                    intake.accept(source, meta, raw)
                except Refused as exc:
                    await _refuse(
                        context, source, exc.reason, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {exc}"
                    )
                    return b""
                info.messages += 1
                info.bytes += len(raw)
            return b""  # StreamAccessLogsResponse / StreamMetricsResponse are empty messages
        finally:
            STREAMS_ACTIVE.labels(source.label).dec()
            streams.close(stream_id)

    return handle


def _export_handler(
    intake: Intake, source: Source, request_type: type[Message], method: str, durable: bool
) -> Any:
    """A unary OTLP Export handler: validate, append, (optionally) wait for fsync, answer."""
    type_name = request_type.DESCRIPTOR.full_name

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            request_type.FromString(raw)
        except ProtobufDecodeError as exc:
            problem = f"{method}: request from {context.peer()} is not a valid {type_name}: {exc}"
            await _refuse(context, source, "malformed", grpc.StatusCode.INVALID_ARGUMENT, problem)
            return b""
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        meta = json.dumps({"node_id": str(metadata.get("x-meshloop-node-id", ""))}).encode()
        try:
            seq = intake.accept(source, meta, raw)
        except Refused as exc:
            await _refuse(context, source, exc.reason, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {exc}")
            return b""
        if durable:
            await intake.wait_durable(seq)
        return b""  # Export*ServiceResponse without partial_success: everything accepted

    return handle


def _raw(value: bytes) -> bytes:
    return value


def generic_handlers(
    intake: Intake, streams: StreamRegistry, durable_exports: bool = True
) -> list[grpc.GenericRpcHandler]:
    """Every collector service as generic handlers over raw bytes (no deserializer)."""
    from envoy.service.accesslog.v3 import als_pb2
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp_metrics_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    from meshloop.collector.gen import metrics_service_pb2

    stream_services = (
        ("envoy.service.accesslog.v3.AccessLogService", "StreamAccessLogs", Source.ENVOY_ALS,
         als_pb2.StreamAccessLogsMessage),
        ("envoy.service.metrics.v3.MetricsService", "StreamMetrics", Source.ENVOY_METRICS,
         metrics_service_pb2.StreamMetricsMessage),
    )  # fmt: skip
    exports = (
        ("opentelemetry.proto.collector.logs.v1.LogsService", Source.OTLP_LOGS,
         logs_service_pb2.ExportLogsServiceRequest),
        ("opentelemetry.proto.collector.trace.v1.TraceService", Source.OTLP_TRACES,
         trace_service_pb2.ExportTraceServiceRequest),
        ("opentelemetry.proto.collector.metrics.v1.MetricsService", Source.OTLP_METRICS,
         otlp_metrics_pb2.ExportMetricsServiceRequest),
    )  # fmt: skip
    handlers = []
    for service, method, source, message_type in stream_services:
        handler = grpc.stream_unary_rpc_method_handler(
            _stream_handler(intake, streams, source, message_type, method), response_serializer=_raw
        )
        handlers.append(grpc.method_handlers_generic_handler(service, {method: handler}))
    for service, source, request_type in exports:
        unary = _export_handler(
            intake, source, request_type, f"{service.rsplit('.', 1)[1]}/Export", durable_exports
        )
        handler = grpc.unary_unary_rpc_method_handler(unary, response_serializer=_raw)
        handlers.append(grpc.method_handlers_generic_handler(service, {"Export": handler}))
    return handlers
