"""Raw ``StreamAccessLogsMessage`` payloads → one ``access_logs`` polars frame, columnar.

The hot path of the collector. Two passes, neither with per-entry Python:

1. :mod:`meshloop.accesslog.native`: a C reader specialised to these messages walks the
   wire bytes of every payload of the batch in one call (without the GIL) and returns
   flat columns — scalars, ``ip:port`` addresses, the response-flag bitmask, the first
   ``spiffe://`` SAN, and trace and span ids from the trace-context headers
   (:mod:`meshloop.accesslog.tracecontext`'s rules).
2. Vectorised polars expressions finish the ``access_logs`` columns: enum names,
   response-flag codes, Istio cluster names, SPIFFE ids — values with a
   handful of distinct values per batch are computed once per distinct value.

:func:`meshloop.accesslog.reference.decode_reference` is the field-by-field version of
the same mapping and the oracle of the tests; the column rules are documented there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import polars as pl

from meshloop.accesslog import codes, identity, native
from meshloop.accesslog.identity import StreamIdentity
from meshloop.accesslog.scan import first_problem
from meshloop.accesslog.schema import ACCESS_LOG_SCHEMA

__all__ = ["DecodeError", "decode_batch", "decode_batch_skipping"]


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
    messages: Sequence[bytes],
    stream: StreamIdentity | Sequence[StreamIdentity],
    *,
    batch_id: str = "",
) -> pl.DataFrame:
    """Decode serialized ``StreamAccessLogsMessage`` payloads to ``access_logs`` rows.

    Rows follow the payloads' order, entries in each payload's order. ``stream`` is the
    identity of the stream the payloads came on (its first message's ``identifier``),
    or one identity per payload: a collector batch holds many streams and is decoded in
    one call. ``batch_id`` fills ``BatchId``. Raises :class:`DecodeError` naming the
    first malformed payload.
    """
    frame, _ = _decode(messages, stream, batch_id, skip_malformed=False)
    return frame


def decode_batch_skipping(
    messages: Sequence[bytes],
    stream: StreamIdentity | Sequence[StreamIdentity],
    *,
    batch_id: str = "",
) -> tuple[pl.DataFrame, list[DecodeError]]:
    """:func:`decode_batch` for a collector batch: the rows of every valid payload, and
    a :class:`DecodeError` for each malformed one (which contributes no rows) — one
    pass, however many payloads are bad."""
    return _decode(messages, stream, batch_id, skip_malformed=True)


def _decode(
    messages: Sequence[bytes],
    stream: StreamIdentity | Sequence[StreamIdentity],
    batch_id: str,
    skip_malformed: bool,
) -> tuple[pl.DataFrame, list[DecodeError]]:
    for index, payload in enumerate(messages):
        if not isinstance(payload, bytes):
            raise DecodeError(index, None, f"expected bytes, got {type(payload).__name__}")
    streams = [stream] * len(messages) if isinstance(stream, StreamIdentity) else list(stream)
    if len(streams) != len(messages):
        raise ValueError(f"{len(streams)} stream identities for {len(messages)} payloads")
    try:
        if skip_malformed:
            columns, malformed = native.decode_columns_skipping(messages)
        else:
            columns, malformed = native.decode_columns(messages), []
    except native.NativeDecodeError as exc:
        raise _located(messages, exc) from None
    errors = [_located(messages, exc) for exc in malformed]
    raw = pl.DataFrame(columns)
    if raw.height == 0:
        return ACCESS_LOG_SCHEMA.to_frame(), errors
    derived = (_istio(raw), *_flag_codes(raw), _cipher_names(raw), *_enum_names(raw))
    lazy = raw.lazy().with_columns(*derived, *_reporters(raw, streams))
    return lazy.select(_columns(batch_id)).collect(), errors


def _located(messages: Sequence[bytes], exc: native.NativeDecodeError) -> DecodeError:
    """The reader's error, with the exact field from the slow scan for the operator."""
    problem = first_problem(messages[exc.payload])
    offset, reason = problem if problem is not None else (exc.offset, exc.reason)
    return DecodeError(exc.payload, offset, reason)


_REPORTER = {
    "ReporterNodeId": "node_id",
    "ReporterCluster": "cluster",
    "ReporterWorkload": "workload",
    "ReporterNamespace": "namespace",
    "ReporterVersion": "version",
    "LogName": "log_name",
}


def _reporters(raw: pl.DataFrame, streams: list[StreamIdentity]) -> list[pl.Series]:
    """The reporter columns: each row's stream identity, gathered by its payload."""
    distinct = list(dict.fromkeys(streams))
    if len(distinct) == 1:
        only = distinct[0]
        return [pl.repeat(getattr(only, f), raw.height, dtype=pl.String, eager=True).alias(c)
                for c, f in _REPORTER.items()]
    index = {identity_: i for i, identity_ in enumerate(distinct)}
    of_payload = pl.Series([index[s] for s in streams], dtype=pl.UInt32)
    rows = of_payload.gather(raw["payload"])
    return [pl.Series(c, [getattr(s, f) for s in distinct], dtype=pl.String).gather(rows)
            for c, f in _REPORTER.items()]


# Enum columns of the reader → (stored column, names): mapped once per distinct value.
_ENUMS = {
    "access_log_type": ("AccessLogType", codes.ACCESS_LOG_TYPES),
    "method": ("Method", codes.REQUEST_METHODS),
    "protocol": ("Protocol", codes.HTTP_VERSIONS),
    "tls_version": ("TlsVersion", codes.TLS_VERSIONS),
}


def _enum_names(raw: pl.DataFrame) -> list[pl.Series]:
    return [
        _once_per_value(raw[column], partial(codes.enum_name, table), name, pl.String())
        for column, (name, table) in _ENUMS.items()
    ]


def _once_per_value(
    values: pl.Series, compute: Callable[[Any], Any], name: str, dtype: pl.DataType
) -> pl.Series:
    """``compute(value)`` for each distinct value of ``values``, gathered to every row."""
    distinct = values.unique().sort()
    results = [compute(value) for value in distinct.to_list()]
    return pl.Series(name, results, dtype=dtype).gather(distinct.search_sorted(values))


def _flag_codes(raw: pl.DataFrame) -> tuple[pl.Series]:
    """ResponseFlags (short codes in bit order) from the bitmask, once per distinct mask."""

    def names(mask: int) -> list[str]:
        return [code for bit, (_field, code) in enumerate(codes.RESPONSE_FLAGS) if mask >> bit & 1]

    return (_once_per_value(raw["ResponseFlagsMask"], names, "ResponseFlags", pl.List(pl.String)),)


def _cipher_names(raw: pl.DataFrame) -> pl.Series:
    """TLS cipher suite names, mapped once per distinct code point of the batch."""
    suites = raw["cipher"]
    if suites.null_count() == suites.len():
        return pl.repeat("", suites.len(), dtype=pl.String, eager=True).alias("_cipher")
    return _once_per_value(suites, codes.cipher_name, "_cipher", pl.String())


_ISTIO_CLUSTER = r"^(inbound|outbound)\|([^|]*)\|([^|]*)\|([^|]*)$"


def _istio(raw: pl.DataFrame) -> pl.Series:
    """The parts of Istio cluster names (``_istio`` struct), parsed once per distinct
    name of the batch (a handful) and gathered to the entries."""
    clusters = raw["UpstreamCluster"]
    distinct = clusters.unique().sort()
    parsed = distinct.str.extract_groups(_ISTIO_CLUSTER)
    return parsed.gather(distinct.search_sorted(clusters)).alias("_istio")


def _destination_and_source() -> list[pl.Expr]:
    istio = pl.col("_istio")
    direction = istio.struct.field("1")
    port_text = istio.struct.field("2")
    is_port = port_text.str.contains(identity.PORT_PATTERN)
    number = pl.when(is_port).then(port_text.str.to_integer(strict=False))
    port = pl.when(number <= 0xFFFF).then(number).otherwise(0).cast(pl.UInt16)
    cluster = pl.col("UpstreamCluster")
    host = pl.when(direction.is_not_null()).then(istio.struct.field("4")).otherwise(cluster)
    authority_host = pl.col("Authority").str.replace(identity.AUTHORITY_PORT_PATTERN, "")
    service = pl.when((host == "") & (direction == "inbound")).then(authority_host).otherwise(host)
    spiffe = pl.col("SourcePrincipal").str.extract_groups(identity.SPIFFE_PATTERN)
    outbound = direction == "outbound"
    workload = (
        pl.when(spiffe.struct.field("2").is_not_null()).then(spiffe.struct.field("2"))
        .when(outbound).then(pl.col("ReporterWorkload")).otherwise(pl.lit(""))
    )
    namespace = (
        pl.when(spiffe.struct.field("1").is_not_null()).then(spiffe.struct.field("1"))
        .when(outbound).then(pl.col("ReporterNamespace")).otherwise(pl.lit(""))
    )
    return [
        workload.alias("SourceWorkload"),
        namespace.alias("SourceNamespace"),
        service.alias("DestinationService"),
        istio.struct.field("3").fill_null("").alias("DestinationSubset"),
        port.fill_null(0).alias("DestinationPort"),
    ]


def _columns(batch_id: str) -> list[pl.Expr]:
    """Every ``access_logs`` column, in table order. TCP entries have zero/empty request
    and response fields (the reader leaves them unset), which map to the TCP values."""
    request_id = pl.col("request_id")
    code = pl.col("response_code")
    columns = {
        "Timestamp": pl.col("start_ns").cast(pl.Datetime("ns")),
        "LogKind": pl.when(pl.col("kind") == 0).then(pl.lit("http")).otherwise(pl.lit("tcp")),
        "ResponseCode": pl.when(code <= 0xFFFF).then(code).otherwise(0),
        "RequestId": pl.when(request_id == "").then(pl.col("stream_id")).otherwise(request_id),
        "UpstreamRequestAttemptCount": pl.col("UpstreamRequestAttemptCount"),
        "TlsCipherSuite": pl.col("_cipher"),
        "BatchId": pl.lit(batch_id),
    }
    for expr in _destination_and_source():
        columns[expr.meta.output_name()] = expr
    return [
        (columns[name] if name in columns else pl.col(name)).cast(dtype).alias(name)
        for name, dtype in ACCESS_LOG_SCHEMA.items()
    ]
