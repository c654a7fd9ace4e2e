"""Raw ``StreamAccessLogsMessage`` payloads → one ``access_logs`` polars frame, columnar.

The hot path of the collector. Two passes, neither with per-entry Python:

1. :mod:`meshloop.accesslog.wire`: ptars (Rust) parses every payload of the batch in
   one call straight into Arrow, through a reduced descriptor of Envoy's messages.
2. Vectorised polars expressions turn the nested Arrow columns into the flat
   ``access_logs`` columns: enum names, response-flag codes and bitmask, ``ip:port``
   addresses, header lookups (flat over all headers of the batch), trace context,
   Istio cluster names, SPIFFE ids.

:func:`meshloop.accesslog.reference.decode_reference` is the field-by-field version of
the same mapping and the oracle of the tests; the column rules are documented there.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from envoy.data.accesslog.v3.accesslog_pb2 import ResponseFlags
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshloop.accesslog import codes, identity, tracecontext, wire
from meshloop.accesslog.codes import flag_codes, flag_mask
from meshloop.accesslog.identity import StreamIdentity
from meshloop.accesslog.scan import first_problem
from meshloop.accesslog.schema import ACCESS_LOG_SCHEMA

__all__ = ["DecodeError", "decode_batch"]


class DecodeError(ValueError):
    """A payload of the batch is not a valid ``StreamAccessLogsMessage``.

    ``message_index`` is the payload's position in the batch, ``offset`` the byte
    offset of the first malformed field in it (``None`` when it could not be located).
    """

    def __init__(self, message_index: int | None, offset: int | None, reason: str) -> None:
        self.message_index = message_index
        self.offset = offset
        self.reason = reason
        where = "batch" if message_index is None else f"message {message_index}"
        if offset is not None:
            where += f" at byte {offset}"
        super().__init__(f"undecodable StreamAccessLogsMessage: {where}: {reason}")


def decode_batch(
    messages: Sequence[bytes], stream: StreamIdentity, *, batch_id: str = ""
) -> pl.DataFrame:
    """Decode serialized ``StreamAccessLogsMessage`` payloads of one stream to ``access_logs`` rows.

    Rows follow the payloads' order, entries in each payload's order. ``stream`` is the
    stream's identity (its first message's ``identifier``); ``batch_id`` fills ``BatchId``.
    Raises :class:`DecodeError` naming the bad payload if any payload is malformed.
    """
    batch = _to_arrow(messages)
    frames = []
    for kind in ("http_logs", "tcp_logs"):
        entries, parents = wire.entries(batch, kind)
        if len(entries):
            frames.append((_frame(entries, kind, stream, batch_id), parents))
    if not frames:
        return ACCESS_LOG_SCHEMA.to_frame()
    if len(frames) == 1:
        return frames[0][0]
    # Both kinds in one batch: restore payload order (stable: entries keep theirs).
    order = pc.sort_indices(pa.concat_arrays([parents for _, parents in frames]))
    return pl.concat([frame for frame, _ in frames]).select(
        pl.all().gather(pl.Series(order).cast(pl.UInt32))
    )


def _to_arrow(messages: Sequence[bytes]) -> pa.RecordBatch:
    try:
        return wire.batch_to_arrow(messages)
    except BaseException as exc:  # ptars: ValueError, or a Rust panic (PanicException)
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        index, offset, reason = _locate(messages, str(exc))
        raise DecodeError(index, offset, reason) from exc


def _locate(messages: Sequence[bytes], reason: str) -> tuple[int | None, int | None, str]:
    """The first payload ptars rejects, and where in it the wire format breaks."""
    for index, payload in enumerate(messages):
        if not isinstance(payload, bytes | bytearray | memoryview):
            return index, None, f"expected bytes, got {type(payload).__name__}"
        try:
            wire.batch_to_arrow([bytes(payload)])
        except BaseException as exc:  # same translation as above, one payload at a time
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            problem = first_problem(bytes(payload))
            if problem is None:
                return index, None, str(exc)
            return index, problem[0], problem[1]
    return None, None, reason


def _frame(entries: pa.StructArray, kind: str, stream: StreamIdentity, batch_id: str) -> pl.DataFrame:
    raw = pl.from_arrow(pa.RecordBatch.from_struct_array(entries))
    assert isinstance(raw, pl.DataFrame)
    headers = _headers(entries) if kind == "http_logs" else None
    lazy = raw.lazy().with_columns(_ciphers(raw), *_flags(raw))
    if headers is not None:
        lazy = lazy.with_columns(headers)
    return lazy.with_columns(_istio(raw), _spiffe(raw)).select(_columns(kind, stream, batch_id)).collect()


# --- helpers over struct columns -------------------------------------------------------
_common = pl.col("common_properties")
_request = pl.col("request")
_response = pl.col("response")
_tls = _common.struct.field("tls_properties")


def _c(name: str) -> pl.Expr:
    return _common.struct.field(name)


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null("")


def _nanos(expr: pl.Expr) -> pl.Expr:
    """A Duration column → UInt64 ns (negative → 0; absent stays null)."""
    return expr.dt.total_nanoseconds().clip(lower_bound=0).cast(pl.UInt64)


def _enum(expr: pl.Expr, table: dict[int, str]) -> pl.Expr:
    return expr.fill_null(0).replace_strict(
        table, default=expr.fill_null(0).cast(pl.String), return_dtype=pl.String
    )


def _address(expr: pl.Expr) -> pl.Expr:
    """``Address`` → ``ip:port`` (``[v6]:port``) for a socket address, else ''."""
    socket = expr.struct.field("socket_address")
    host = socket.struct.field("address")
    bracketed = pl.concat_str(pl.lit("["), host, pl.lit("]"))
    host = pl.when(host.str.contains(":", literal=True)).then(bracketed).otherwise(host)
    return (
        pl.when(socket.is_not_null())
        .then(pl.concat_str(host, pl.lit(":"), socket.struct.field("port_value").cast(pl.String)))
        .otherwise(pl.lit(""))
    )


def _ciphers(raw: pl.DataFrame) -> pl.Series:
    """TLS cipher suite names, mapped once per distinct code point of the batch."""
    suites = raw.select(_tls.struct.field("tls_cipher_suite")).to_series()
    names = {value: codes.cipher_name(value) for value in suites.drop_nulls().unique().to_list()}
    if not names:
        return pl.repeat("", len(suites), eager=True).alias("_cipher")
    return suites.replace_strict(names, default="", return_dtype=pl.String).fill_null("").alias("_cipher")


_HEADER_LIST = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


def _headers(entries: pa.StructArray) -> list[pl.Series]:
    """The trace-context headers of every entry, looked up flat over all headers.

    One pass over the batch's header keys; for duplicate keys the last one wins, as
    in protobuf map parsing.
    """
    request = pc.struct_field(entries, "request")
    # A map is a list of key/value structs; as a plain list, Arrow's list kernels
    # (which honour slicing, unlike MapArray.keys) apply.
    headers = pc.struct_field(request, "request_headers").cast(_HEADER_LIST)
    pairs = pc.list_flatten(headers)
    flat = pl.DataFrame({
        "row": pl.Series(pc.list_parent_indices(headers)).cast(pl.UInt32),
        "key": pl.Series(pc.struct_field(pairs, "key")),
        "value": pl.Series(pc.struct_field(pairs, "value")),
    }).filter(pl.col("key").is_in(tracecontext.HEADERS))
    out = []
    for name in tracecontext.HEADERS:
        found = flat.filter(pl.col("key") == name)
        column = pl.Series(f"h:{name}", [None] * len(entries), dtype=pl.String)
        if found.height:
            column = column.scatter(found["row"], found["value"])
        out.append(column)
    return out


_ISTIO_CLUSTER = r"^(inbound|outbound)\|([^|]*)\|([^|]*)\|([^|]*)$"


def _istio(raw: pl.DataFrame) -> pl.Series:
    """The parts of Istio cluster names (``_istio`` struct), parsed once per distinct
    name of the batch (a handful) and gathered to the entries."""
    clusters = raw.select(_text(_c("upstream_cluster"))).to_series()
    distinct = clusters.unique().sort()
    parsed = distinct.str.extract_groups(_ISTIO_CLUSTER)
    return parsed.gather(distinct.search_sorted(clusters)).alias("_istio")


def _spiffe(raw: pl.DataFrame) -> pl.Series:
    """The first ``spiffe://`` URI SAN of each entry's peer certificate ('' if none)."""
    sans = raw.select(
        _tls.struct.field("peer_certificate_properties").struct.field("subject_alt_name")
    ).to_series()
    if sans.null_count() == sans.len():  # no TLS peer in the batch: skip the list walk
        return pl.repeat("", sans.len(), dtype=pl.String, eager=True).alias("_spiffe")
    uris = sans.list.eval(
        pl.element().struct.field("uri").filter(pl.element().struct.field("uri").str.starts_with("spiffe://"))
    )
    return uris.list.first().fill_null("").alias("_spiffe")


def _flags(raw: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """(ResponseFlags, ResponseFlagsMask) from the raw ``ResponseFlags`` bytes.

    A batch has a handful of distinct flag payloads (most entries have none): each is
    parsed once with protobuf and the results gathered to the entries.
    """
    payloads = raw.select(_c("response_flags")).to_series().fill_null(b"")
    distinct = payloads.unique().sort()
    masks, lists = [], []
    for payload in distinct.to_list():
        try:
            names = flag_codes(ResponseFlags.FromString(payload))
        except ProtobufDecodeError as exc:
            raise DecodeError(None, None, f"malformed response_flags {payload!r}") from exc
        lists.append(names)
        masks.append(flag_mask(names))
    where = distinct.search_sorted(payloads)
    flags = pl.Series("ResponseFlags", lists, dtype=pl.List(pl.String)).gather(where)
    mask = pl.Series("ResponseFlagsMask", masks, dtype=pl.UInt64).gather(where)
    return flags, mask


def _trace() -> tuple[pl.Expr, pl.Expr]:
    """(TraceId, SpanId) from the looked-up headers; rules in :mod:`tracecontext`."""
    tc = tracecontext
    # Version 00 has fixed offsets: one regex test, then two slices.
    parent = pl.col(f"h:{tc.TRACEPARENT}")
    parent_ok = parent.str.contains(tc.TRACEPARENT_PATTERN)
    parent_trace = pl.when(parent_ok).then(parent.str.slice(3, 32))
    parent_span = parent.str.slice(36, 16)
    b3_trace = pl.col(f"h:{tc.B3_TRACE_ID}")
    b3_trace = pl.when(b3_trace.str.contains(tc.B3_TRACE_ID_PATTERN)).then(b3_trace.str.zfill(32))
    b3_span = pl.col(f"h:{tc.B3_SPAN_ID}")
    b3_span = pl.when(b3_span.str.contains(tc.B3_SPAN_ID_PATTERN)).then(b3_span).otherwise(pl.lit(""))
    single = pl.col(f"h:{tc.B3_SINGLE}").str.extract_groups(tc.B3_SINGLE_PATTERN)
    single_trace, single_span = single.struct.field("1").str.zfill(32), single.struct.field("2")

    def valid(trace: pl.Expr) -> pl.Expr:
        return trace.is_not_null() & (trace != tc.ZERO_TRACE_ID)

    trace = (
        pl.when(valid(parent_trace)).then(parent_trace)
        .when(valid(b3_trace)).then(b3_trace)
        .when(valid(single_trace)).then(single_trace)
        .otherwise(pl.lit(""))
    )
    span = (
        pl.when(valid(parent_trace)).then(parent_span)
        .when(valid(b3_trace)).then(b3_span)
        .when(valid(single_trace)).then(single_span)
        .otherwise(pl.lit(""))
    )
    return trace, span


def _destination_and_source(stream: StreamIdentity, authority: pl.Expr) -> list[pl.Expr]:
    istio = pl.col("_istio")
    direction = istio.struct.field("1")
    port_text = istio.struct.field("2")
    is_port = port_text.str.contains(identity.PORT_PATTERN)
    number = pl.when(is_port).then(port_text.str.to_integer(strict=False))
    port = pl.when(number <= 0xFFFF).then(number).otherwise(0).cast(pl.UInt16)
    cluster = _text(_c("upstream_cluster"))
    host = pl.when(direction.is_not_null()).then(istio.struct.field("4")).otherwise(cluster)
    authority_host = authority.str.replace(identity.AUTHORITY_PORT_PATTERN, "")
    service = pl.when((host == "") & (direction == "inbound")).then(authority_host).otherwise(host)
    spiffe = pl.col("_spiffe").str.extract_groups(identity.SPIFFE_PATTERN)
    outbound = direction == "outbound"
    workload = (
        pl.when(spiffe.struct.field("2").is_not_null()).then(spiffe.struct.field("2"))
        .when(outbound).then(pl.lit(stream.workload)).otherwise(pl.lit(""))
    )
    namespace = (
        pl.when(spiffe.struct.field("1").is_not_null()).then(spiffe.struct.field("1"))
        .when(outbound).then(pl.lit(stream.namespace)).otherwise(pl.lit(""))
    )
    return [
        pl.col("_spiffe").alias("SourcePrincipal"),
        workload.alias("SourceWorkload"),
        namespace.alias("SourceNamespace"),
        service.alias("DestinationService"),
        _text(istio.struct.field("3")).alias("DestinationSubset"),
        port.fill_null(0).alias("DestinationPort"),
    ]


def _columns(kind: str, stream: StreamIdentity, batch_id: str) -> list[pl.Expr]:
    """Every ``access_logs`` column, in table order, over one kind of entry."""
    http = kind == "http_logs"
    zero = pl.lit(0, dtype=pl.UInt64)
    if http:
        trace, span = _trace()
        request_id = _text(_request.struct.field("request_id"))
        request_id = pl.when(request_id == "").then(_text(_c("stream_id"))).otherwise(request_id)
    else:
        trace = span = pl.lit("")
        request_id = _text(_c("stream_id"))

    def req(name: str) -> pl.Expr:
        return _text(_request.struct.field(name)) if http else pl.lit("")

    def count(struct: pl.Expr, name: str, of_http: bool) -> pl.Expr:
        return struct.struct.field(name).fill_null(0).cast(pl.UInt64) if of_http == http else zero

    tcp = pl.col("connection_properties")
    duration = pl.coalesce(_c("duration"), _c("time_to_last_downstream_tx_byte"))
    code = _response.struct.field("response_code") if http else pl.lit(0)
    columns = {
        "Timestamp": _c("start_time").fill_null(pl.lit(0).cast(pl.Datetime("ns"))),
        "LogKind": pl.lit("http" if http else "tcp"),
        "AccessLogType": _enum(_c("access_log_type"), codes.ACCESS_LOG_TYPES),
        "ReporterNodeId": pl.lit(stream.node_id),
        "ReporterCluster": pl.lit(stream.cluster),
        "ReporterWorkload": pl.lit(stream.workload),
        "ReporterNamespace": pl.lit(stream.namespace),
        "ReporterVersion": pl.lit(stream.version),
        "LogName": pl.lit(stream.log_name),
        "Duration": _nanos(duration).fill_null(0),
        "TimeToLastRxByte": _nanos(_c("time_to_last_rx_byte")),
        "TimeToFirstUpstreamTxByte": _nanos(_c("time_to_first_upstream_tx_byte")),
        "TimeToLastUpstreamTxByte": _nanos(_c("time_to_last_upstream_tx_byte")),
        "TimeToFirstUpstreamRxByte": _nanos(_c("time_to_first_upstream_rx_byte")),
        "TimeToLastUpstreamRxByte": _nanos(_c("time_to_last_upstream_rx_byte")),
        "TimeToFirstDownstreamTxByte": _nanos(_c("time_to_first_downstream_tx_byte")),
        "TimeToLastDownstreamTxByte": _nanos(_c("time_to_last_downstream_tx_byte")),
        "ResponseCode": code.cast(pl.UInt16, strict=False).fill_null(0),
        "ResponseFlags": pl.col("ResponseFlags"),
        "ResponseFlagsMask": pl.col("ResponseFlagsMask"),
        "ResponseCodeDetails": _text(_response.struct.field("response_code_details")) if http else pl.lit(""),
        "ConnectionTerminationDetails": _text(_c("connection_termination_details")),
        "Method": (
            _enum(_request.struct.field("request_method"), codes.REQUEST_METHODS) if http else pl.lit("")
        ),
        "Scheme": req("scheme"),
        "Authority": req("authority"),
        "Path": req("path"),
        "UserAgent": req("user_agent"),
        "RequestId": request_id,
        "TraceId": trace,
        "SpanId": span,
        "Referer": req("referer"),
        "ForwardedFor": req("forwarded_for"),
        "RequestHeadersBytes": count(_request, "request_headers_bytes", True),
        "RequestBodyBytes": count(_request, "request_body_bytes", True),
        "ResponseHeadersBytes": count(_response, "response_headers_bytes", True),
        "ResponseBodyBytes": count(_response, "response_body_bytes", True),
        "TcpReceivedBytes": count(tcp, "received_bytes", False),
        "TcpSentBytes": count(tcp, "sent_bytes", False),
        "Protocol": _enum(pl.col("protocol_version"), codes.HTTP_VERSIONS) if http else pl.lit(""),
        "UpstreamCluster": _text(_c("upstream_cluster")),
        "UpstreamHost": _address(_c("upstream_remote_address")),
        "UpstreamLocalAddress": _address(_c("upstream_local_address")),
        "UpstreamTransportFailureReason": _text(_c("upstream_transport_failure_reason")),
        "RouteName": _text(_c("route_name")),
        "DownstreamRemoteAddress": _address(_c("downstream_remote_address")),
        "DownstreamLocalAddress": _address(_c("downstream_local_address")),
    }
    for expr in _destination_and_source(stream, req("authority")):
        columns[expr.meta.output_name()] = expr
    columns |= {
        "UpstreamRequestAttemptCount": _c("upstream_request_attempt_count").fill_null(0).cast(pl.UInt32),
        "TlsVersion": _enum(_tls.struct.field("tls_version"), codes.TLS_VERSIONS),
        "TlsCipherSuite": pl.col("_cipher"),
        "TlsSni": _text(_tls.struct.field("tls_sni_hostname")),
        "BatchId": pl.lit(batch_id),
    }
    return [columns[name].cast(dtype).alias(name) for name, dtype in ACCESS_LOG_SCHEMA.items()]
