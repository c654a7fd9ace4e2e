"""The obvious decoder: ``ParseFromString`` + field-by-field Python, one entry at a time.

The specification of every ``access_logs`` column, written plainly; the oracle the
tests hold :func:`meshloop.accesslog.decode.decode_batch` to, and the baseline of
``benchmarks/accesslog_decode.py``. Too slow for the hot path (~60k entries/s per core).

Column rules (both decoders):

- ``Timestamp``: ``start_time`` in ns since the epoch (0 when absent).
- ``Duration``: ``duration``; Envoy leaves it unset on intermediate/periodic entries
  and older Envoys never set it, and for a finished HTTP stream it equals the time to
  the last downstream byte sent, so it falls back to ``time_to_last_downstream_tx_byte``,
  then 0. ``TimeTo*``: ns, null when Envoy did not record the event. Negative → 0.
- Enums → names (:mod:`codes`); response flags → short codes in bit order + bitmask.
- Strings absent → ''. Counters absent → 0. ``ResponseCode``: 0 when no response.
- ``RequestId``: ``request.request_id``, else ``stream_id`` (TCP: ``stream_id``).
- ``TraceId``/``SpanId``: :func:`meshloop.accesslog.tracecontext.trace_context`.
- Addresses: ``ip:port`` (``[ip6]:port``) of a socket address, else ''.
- ``SourcePrincipal``: the first ``spiffe://`` URI SAN of the downstream peer
  certificate; ``SourceWorkload``/``SourceNamespace``: :func:`identity.source`;
  ``Destination*``: :func:`identity.destination`.
- A payload with both ``http_logs`` and ``tcp_logs`` (invalid: they are a oneof)
  is read by protobuf as the last one present; the columnar decoder reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshloop.accesslog import codes, identity
from meshloop.accesslog.identity import StreamIdentity
from meshloop.accesslog.schema import ACCESS_LOG_SCHEMA
from meshloop.accesslog.tracecontext import trace_context

_DURATIONS = {
    "TimeToLastRxByte": "time_to_last_rx_byte",
    "TimeToFirstUpstreamTxByte": "time_to_first_upstream_tx_byte",
    "TimeToLastUpstreamTxByte": "time_to_last_upstream_tx_byte",
    "TimeToFirstUpstreamRxByte": "time_to_first_upstream_rx_byte",
    "TimeToLastUpstreamRxByte": "time_to_last_upstream_rx_byte",
    "TimeToFirstDownstreamTxByte": "time_to_first_downstream_tx_byte",
    "TimeToLastDownstreamTxByte": "time_to_last_downstream_tx_byte",
}


def decode_reference(
    messages: Sequence[bytes], stream: StreamIdentity, *, batch_id: str = ""
) -> pl.DataFrame:
    """Same contract as :func:`meshloop.accesslog.decode.decode_batch`, in plain Python."""
    from meshloop.accesslog.decode import DecodeError

    rows: list[dict[str, Any]] = []
    for index, payload in enumerate(messages):
        message = als_pb2.StreamAccessLogsMessage()
        try:
            message.ParseFromString(payload)
        except ProtobufDecodeError as exc:
            raise DecodeError(index, None, str(exc)) from exc
        for http in message.http_logs.log_entry:
            rows.append(http_row(http, stream, batch_id))
        for tcp in message.tcp_logs.log_entry:
            rows.append(tcp_row(tcp, stream, batch_id))
    columns = {name: [row[name] for row in rows] for name in ACCESS_LOG_SCHEMA}
    schema = ACCESS_LOG_SCHEMA | {"Timestamp": pl.Int64()}
    frame = pl.DataFrame(columns, schema=schema)
    return frame.with_columns(pl.col("Timestamp").cast(pl.Datetime("ns")))


def _nanos(duration: Any) -> int:
    return max(duration.ToNanoseconds(), 0)


def _address(address: Any) -> str:
    if not address.HasField("socket_address"):
        return ""
    socket = address.socket_address
    host = f"[{socket.address}]" if ":" in socket.address else socket.address
    return f"{host}:{socket.port_value}"


def _common_row(common: Any, stream: StreamIdentity, batch_id: str) -> dict[str, Any]:
    duration = common.duration if common.HasField("duration") else common.time_to_last_downstream_tx_byte
    tls = common.tls_properties
    spiffe = next(
        (san.uri for san in tls.peer_certificate_properties.subject_alt_name
         if san.uri.startswith("spiffe://")),
        "",
    )
    flags = codes.flag_codes(common.response_flags)
    row: dict[str, Any] = {
        "Timestamp": common.start_time.ToNanoseconds(),
        "AccessLogType": codes.enum_name(codes.ACCESS_LOG_TYPES, common.access_log_type),
        "ReporterNodeId": stream.node_id,
        "ReporterCluster": stream.cluster,
        "ReporterWorkload": stream.workload,
        "ReporterNamespace": stream.namespace,
        "ReporterVersion": stream.version,
        "LogName": stream.log_name,
        "Duration": _nanos(duration),
        "ResponseFlags": flags,
        "ResponseFlagsMask": codes.flag_mask(flags),
        "ConnectionTerminationDetails": common.connection_termination_details,
        "UpstreamCluster": common.upstream_cluster,
        "UpstreamHost": _address(common.upstream_remote_address),
        "UpstreamLocalAddress": _address(common.upstream_local_address),
        "UpstreamTransportFailureReason": common.upstream_transport_failure_reason,
        "RouteName": common.route_name,
        "DownstreamRemoteAddress": _address(common.downstream_remote_address),
        "DownstreamLocalAddress": _address(common.downstream_local_address),
        "SourcePrincipal": spiffe,
        "UpstreamRequestAttemptCount": common.upstream_request_attempt_count,
        "TlsVersion": codes.enum_name(codes.TLS_VERSIONS, tls.tls_version),
        "TlsCipherSuite": codes.cipher_name(
            tls.tls_cipher_suite.value if tls.HasField("tls_cipher_suite") else None
        ),
        "TlsSni": tls.tls_sni_hostname,
        "BatchId": batch_id,
    }
    for column, field in _DURATIONS.items():
        row[column] = _nanos(getattr(common, field)) if common.HasField(field) else None
    direction = identity.parse_cluster_name(common.upstream_cluster).direction
    row["SourceWorkload"], row["SourceNamespace"] = identity.source(spiffe, direction, stream)
    return row


def http_row(
    entry: accesslog_pb2.HTTPAccessLogEntry, stream: StreamIdentity, batch_id: str = ""
) -> dict[str, Any]:
    """One ``access_logs`` row of an ``HTTPAccessLogEntry``."""
    common, request, response = entry.common_properties, entry.request, entry.response
    row = _common_row(common, stream, batch_id)
    trace_id, span_id = trace_context(dict(request.request_headers))
    code = response.response_code.value
    service, subset, port = identity.destination(common.upstream_cluster, request.authority)
    row |= {
        "LogKind": "http",
        "ResponseCode": code if code <= 0xFFFF else 0,
        "ResponseCodeDetails": response.response_code_details,
        "Method": codes.enum_name(codes.REQUEST_METHODS, request.request_method),
        "Scheme": request.scheme,
        "Authority": request.authority,
        "Path": request.path,
        "UserAgent": request.user_agent,
        "RequestId": request.request_id or common.stream_id,
        "TraceId": trace_id,
        "SpanId": span_id,
        "Referer": request.referer,
        "ForwardedFor": request.forwarded_for,
        "RequestHeadersBytes": request.request_headers_bytes,
        "RequestBodyBytes": request.request_body_bytes,
        "ResponseHeadersBytes": response.response_headers_bytes,
        "ResponseBodyBytes": response.response_body_bytes,
        "TcpReceivedBytes": 0,
        "TcpSentBytes": 0,
        "Protocol": codes.enum_name(codes.HTTP_VERSIONS, entry.protocol_version),
        "DestinationService": service,
        "DestinationSubset": subset,
        "DestinationPort": port,
    }
    return row


def tcp_row(
    entry: accesslog_pb2.TCPAccessLogEntry, stream: StreamIdentity, batch_id: str = ""
) -> dict[str, Any]:
    """One ``access_logs`` row of a ``TCPAccessLogEntry``."""
    common = entry.common_properties
    row = _common_row(common, stream, batch_id)
    service, subset, port = identity.destination(common.upstream_cluster, "")
    row |= {
        "LogKind": "tcp", "ResponseCode": 0, "ResponseCodeDetails": "", "Method": "",
        "Scheme": "", "Authority": "", "Path": "", "UserAgent": "", "RequestId": common.stream_id,
        "TraceId": "", "SpanId": "", "Referer": "", "ForwardedFor": "",
        "RequestHeadersBytes": 0, "RequestBodyBytes": 0, "ResponseHeadersBytes": 0,
        "ResponseBodyBytes": 0,
        "TcpReceivedBytes": entry.connection_properties.received_bytes,
        "TcpSentBytes": entry.connection_properties.sent_bytes,
        "Protocol": "",
        "DestinationService": service, "DestinationSubset": subset, "DestinationPort": port,
    }
    return row
