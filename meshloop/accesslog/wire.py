"""Raw ``StreamAccessLogsMessage`` bytes → Arrow, in Rust (ptars), with no per-entry Python.

ptars (https://github.com/0x26res/ptars) parses protobuf wire bytes straight into Arrow
builders from a message descriptor. We hand it a *reduced* copy of Envoy's messages:
same field numbers and wire types, only the fields ``access_logs`` stores. Everything
else — the ``identifier`` with its tens-of-KB node, metadata, filter state, custom
tags, response headers — is skipped as unknown fields without being materialised.
Enums are declared ``int32`` (same varint wire type) and mapped to names in polars;
``ResponseFlags`` is declared ``bytes`` (see ``_AS_BYTES``).

Because the reduced messages are built from the real descriptors (field numbers,
types, labels), a field Envoy renumbers cannot silently decode as something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, timestamp_pb2, wrappers_pb2

_PACKAGE = "meshloop.accesslog.reduced"
_FILE = "meshloop/accesslog/reduced.proto"
_F = descriptor_pb2.FieldDescriptorProto

# Envoy message → (reduced name, fields kept; None = all).
_KEEP: dict[str, tuple[str, frozenset[str] | None]] = {
    "envoy.service.accesslog.v3.StreamAccessLogsMessage": (
        "Batch", frozenset({"http_logs", "tcp_logs"})),
    "envoy.service.accesslog.v3.StreamAccessLogsMessage.HTTPAccessLogEntries": ("HttpEntries", None),
    "envoy.service.accesslog.v3.StreamAccessLogsMessage.TCPAccessLogEntries": ("TcpEntries", None),
    "envoy.data.accesslog.v3.HTTPAccessLogEntry": ("Http", None),
    "envoy.data.accesslog.v3.TCPAccessLogEntry": ("Tcp", None),
    "envoy.data.accesslog.v3.ConnectionProperties": ("Connection", None),
    "envoy.data.accesslog.v3.AccessLogCommon": ("Common", frozenset({
        "downstream_remote_address", "downstream_local_address", "tls_properties", "start_time",
        "time_to_last_rx_byte", "time_to_first_upstream_tx_byte", "time_to_last_upstream_tx_byte",
        "time_to_first_upstream_rx_byte", "time_to_last_upstream_rx_byte",
        "time_to_first_downstream_tx_byte", "time_to_last_downstream_tx_byte",
        "upstream_remote_address", "upstream_local_address", "upstream_cluster", "response_flags",
        "upstream_transport_failure_reason", "route_name", "duration",
        "upstream_request_attempt_count", "connection_termination_details", "stream_id",
        "access_log_type"})),
    "envoy.data.accesslog.v3.TLSProperties": ("Tls", frozenset({
        "tls_version", "tls_cipher_suite", "tls_sni_hostname", "peer_certificate_properties"})),
    "envoy.data.accesslog.v3.TLSProperties.CertificateProperties": (
        "Certificate", frozenset({"subject_alt_name"})),
    "envoy.data.accesslog.v3.TLSProperties.CertificateProperties.SubjectAltName": (
        "SubjectAltName", frozenset({"uri"})),
    "envoy.data.accesslog.v3.HTTPRequestProperties": ("Request", frozenset({
        "request_method", "scheme", "authority", "path", "user_agent", "referer", "forwarded_for",
        "request_id", "request_headers_bytes", "request_body_bytes", "request_headers"})),
    "envoy.data.accesslog.v3.HTTPRequestProperties.RequestHeadersEntry": ("Header", None),
    "envoy.data.accesslog.v3.HTTPResponseProperties": ("Response", frozenset({
        "response_code", "response_headers_bytes", "response_body_bytes", "response_code_details"})),
    "envoy.config.core.v3.Address": ("Address", frozenset({"socket_address"})),
    "envoy.config.core.v3.SocketAddress": ("SocketAddress", frozenset({"address", "port_value"})),
}
# Kept as raw bytes (same wire type as a message): a handful of distinct values per
# batch, decoded once each by the decoder instead of 28 Arrow columns per entry.
_AS_BYTES = frozenset({"envoy.data.accesslog.v3.ResponseFlags"})
_WELL_KNOWN = (timestamp_pb2, duration_pb2, wrappers_pb2)


def reduced_file() -> descriptor_pb2.FileDescriptorProto:
    """The reduced ``.proto`` (as a descriptor) ptars decodes with; see the module doc."""
    # Importing the generated modules registers Envoy's descriptors in the default pool.
    from envoy.config.core.v3 import address_pb2  # noqa: F401
    from envoy.service.accesslog.v3 import als_pb2  # noqa: F401

    default = descriptor_pool.Default()
    out = descriptor_pb2.FileDescriptorProto(name=_FILE, package=_PACKAGE, syntax="proto3")
    out.dependency.extend(module.DESCRIPTOR.name for module in _WELL_KNOWN)
    for full_name, (short, keep) in _KEEP.items():
        message = default.FindMessageTypeByName(full_name)
        reduced = out.message_type.add(name=short)
        if message.GetOptions().map_entry:
            reduced.options.map_entry = True
        for field in message.fields:
            if keep is not None and field.name not in keep:
                continue
            label = _F.LABEL_REPEATED if field.is_repeated else _F.LABEL_OPTIONAL
            proto = reduced.field.add(name=field.name, number=field.number, label=label)
            if field.enum_type is not None:
                proto.type = _F.TYPE_INT32
            elif field.message_type is not None and field.message_type.full_name in _AS_BYTES:
                proto.type = _F.TYPE_BYTES
            elif field.message_type is not None:
                proto.type = _F.TYPE_MESSAGE
                target = field.message_type.full_name
                local = _KEEP.get(target)
                proto.type_name = f".{_PACKAGE}.{local[0]}" if local else f".{target}"
            else:
                proto.type = field.type
    return out


@cache
def _handler():  # -> ptars MessageHandler (untyped extension class)
    import ptars

    pool = descriptor_pool.DescriptorPool()
    for module in _WELL_KNOWN:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(reduced_file())
    file = pool.FindFileByName(_FILE)
    handlers = ptars.HandlerPool([file], config=ptars.PtarsConfig(timestamp_tz=None))
    return handlers.get_for_message(pool.FindMessageTypeByName(f"{_PACKAGE}.Batch"))


def batch_to_arrow(messages: Sequence[bytes]) -> pa.RecordBatch:
    """One row per message: ``http_logs.log_entry`` / ``tcp_logs.log_entry`` lists.

    Raises whatever ptars raises on malformed bytes (``ValueError``; a Rust panic
    surfaces as ``pyo3_runtime.PanicException``); the decoder translates it.
    """
    return _handler().list_to_record_batch(list(messages))


def entries(batch: pa.RecordBatch, kind: str) -> tuple[pa.StructArray, pa.Array]:
    """The ``kind`` ('http_logs' | 'tcp_logs') entries of every message, flattened, and
    the index of the message each came from."""
    lists = pc.struct_field(batch.column(kind), "log_entry")
    return pc.list_flatten(lists), pc.list_parent_indices(lists)
