"""The C access-log decoder (``_als_decode.c``) as pyarrow arrays, through ctypes.

:func:`decode_columns` hands every payload of a batch to ``ml_als_decode`` in one call
(ctypes releases the GIL for it), and wraps the flat columns it returns as pyarrow
arrays over the C buffers — strings as ``string_view``, polars' own layout, so they
reach polars and then ClickHouse without a copy. The buffers are freed when the last
array referring to them is. Column names are those of :data:`NUMERIC` and :data:`STRINGS`,
in the C enums' order (checked against the library at load).

The shared library is built from the C source next to this file: by ``make`` (the
normal path), or on first use when it is missing or older than the source (``$CC``,
default ``cc``); :class:`NativeDecoderUnavailable` says why when neither works.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from meshloop.cbuild import CBuildError, build_command, compile_shared, library_path

__all__ = [
    "NUMERIC", "STRINGS", "NativeDecodeError", "NativeDecoderUnavailable", "decode_columns",
    "decode_columns_skipping",
]

SOURCE = Path(__file__).with_name("_als_decode.c")
LIBRARY = SOURCE.with_suffix(".so")

# (column, Arrow type, nullable) in the order of the C enum N_*.
NUMERIC: tuple[tuple[str, pa.DataType, bool], ...] = (
    ("kind", pa.int64(), False),  # 0 = http_logs, 1 = tcp_logs
    ("payload", pa.int64(), False),  # index of the payload in the batch
    ("start_ns", pa.int64(), False),
    ("TimeToLastRxByte", pa.uint64(), True),
    ("TimeToFirstUpstreamTxByte", pa.uint64(), True),
    ("TimeToLastUpstreamTxByte", pa.uint64(), True),
    ("TimeToFirstUpstreamRxByte", pa.uint64(), True),
    ("TimeToLastUpstreamRxByte", pa.uint64(), True),
    ("TimeToFirstDownstreamTxByte", pa.uint64(), True),
    ("TimeToLastDownstreamTxByte", pa.uint64(), True),
    ("Duration", pa.uint64(), False),
    ("access_log_type", pa.int64(), False),
    ("UpstreamRequestAttemptCount", pa.int64(), False),
    ("ResponseFlagsMask", pa.uint64(), False),
    ("tls_version", pa.int64(), False),
    ("cipher", pa.int64(), True),
    ("protocol", pa.int64(), False),
    ("method", pa.int64(), False),
    ("RequestHeadersBytes", pa.uint64(), False),
    ("RequestBodyBytes", pa.uint64(), False),
    ("response_code", pa.int64(), False),
    ("ResponseHeadersBytes", pa.uint64(), False),
    ("ResponseBodyBytes", pa.uint64(), False),
    ("TcpReceivedBytes", pa.uint64(), False),
    ("TcpSentBytes", pa.uint64(), False),
)
# (column, nullable) in the order of the C enum S_*.
STRINGS: tuple[tuple[str, bool], ...] = (
    ("UpstreamCluster", False),
    ("RouteName", False),
    ("UpstreamTransportFailureReason", False),
    ("ConnectionTerminationDetails", False),
    ("stream_id", False),
    ("TlsSni", False),
    ("SourcePrincipal", False),
    ("UpstreamHost", False),
    ("UpstreamLocalAddress", False),
    ("DownstreamRemoteAddress", False),
    ("DownstreamLocalAddress", False),
    ("Scheme", False),
    ("Authority", False),
    ("Path", False),
    ("UserAgent", False),
    ("Referer", False),
    ("ForwardedFor", False),
    ("request_id", False),
    ("ResponseCodeDetails", False),
    ("TraceId", False),  # from traceparent / B3 headers, rules of meshloop.accesslog.tracecontext
    ("SpanId", False),
)
_ERR_MEMORY = 8
ERRORS = {
    1: "truncated (a length or varint runs past the end)",
    2: "varint longer than 10 bytes",
    3: "invalid wire type",
    4: "invalid field number",
    5: "unbalanced group",
    6: "invalid UTF-8 in a string field",
    7: "nesting too deep",
    8: "out of memory",
}


class NativeDecoderUnavailable(RuntimeError):
    """The C decoder could not be built or loaded (the message says why)."""


class NativeDecodeError(ValueError):
    """A payload is not a valid ``StreamAccessLogsMessage``."""

    def __init__(self, payload: int, offset: int, reason: str) -> None:
        self.payload = payload
        self.offset = offset
        self.reason = reason
        super().__init__(f"payload {payload} at byte {offset}: {reason}")


_P = ctypes.POINTER


def _result_type(numeric: int, strings: int) -> type[ctypes.Structure]:
    class Result(ctypes.Structure):
        _fields_ = [
            ("rows", ctypes.c_int64),
            ("error", ctypes.c_int32),
            ("error_payload", ctypes.c_int64),
            ("error_offset", ctypes.c_int64),
            ("malformed", ctypes.c_int64),
            ("malformed_payload", ctypes.POINTER(ctypes.c_int64)),
            ("malformed_offset", ctypes.POINTER(ctypes.c_int64)),
            ("malformed_code", ctypes.POINTER(ctypes.c_int64)),
            ("num", ctypes.c_void_p * numeric),
            ("num_valid", ctypes.c_void_p * numeric),
            ("str_data", ctypes.c_void_p * strings),
            ("str_bytes", ctypes.c_int64 * strings),
            ("str_valid", ctypes.c_void_p * strings),
            ("str_views", ctypes.c_void_p * strings),
            ("cap_rows", ctypes.c_int64),
            ("cap_data", ctypes.c_int64 * strings),
        ]

    return Result


class _Library:
    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        numeric, strings = ctypes.c_int64(), ctypes.c_int64()
        lib.ml_als_columns.restype = ctypes.c_int64
        size = lib.ml_als_columns(ctypes.byref(numeric), ctypes.byref(strings))
        if (numeric.value, strings.value) != (len(NUMERIC), len(STRINGS)):
            raise NativeDecoderUnavailable(
                f"{path}: {numeric.value} numeric and {strings.value} string columns, "
                f"expected {len(NUMERIC)} and {len(STRINGS)} (rebuild it: make)"
            )
        self.result = _result_type(numeric.value, strings.value)
        if ctypes.sizeof(self.result) != size:
            raise NativeDecoderUnavailable(f"{path}: result layout mismatch (rebuild it: make)")
        lib.ml_als_decode.restype = _P(self.result)
        lib.ml_als_decode.argtypes = [_P(ctypes.c_char_p), _P(ctypes.c_int64), ctypes.c_int64, ctypes.c_int32]
        lib.ml_als_free.restype = None
        lib.ml_als_free.argtypes = [_P(self.result)]
        self.lib = lib


_lock = threading.Lock()
_library: _Library | None = None


def build(target: Path = LIBRARY, flags: Sequence[str] = ("-O3",)) -> Path:
    """Compile the C source into ``target`` (atomically) with ``flags``; return ``target``."""
    try:
        return compile_shared(SOURCE, target, flags)
    except CBuildError as exc:
        raise NativeDecoderUnavailable(str(exc)) from None


LIBRARY_ENV = "MESHLOOP_ALS_DECODE_LIBRARY"
"""Environment variable naming a prebuilt library to load instead (a sanitizer build)."""


def _load() -> _Library:
    global _library
    with _lock:
        if _library is None:
            _library = _Library(library_path(LIBRARY_ENV, SOURCE, LIBRARY, build))
        return _library


class _Owner:
    """Frees a decode result when the last array over its buffers is gone."""

    def __init__(self, library: _Library, result: ctypes._Pointer) -> None:  # type: ignore[type-arg]
        self._free = library.lib.ml_als_free
        self._result = result

    def __del__(self) -> None:
        self._free(self._result)


_EMPTY = pa.py_buffer(b"")


def _bitmap_bytes(rows: int) -> int:
    return (rows + 7) // 8


def decode_columns(payloads: Sequence[bytes]) -> dict[str, pa.Array]:
    """Decode serialized ``StreamAccessLogsMessage``\\ s into flat columns (one row per
    entry, payload order, entries in wire order). Raises :class:`NativeDecodeError`
    for the first malformed payload."""
    columns, _ = _decode(payloads, skip_malformed=False)
    return columns


Decoded = tuple[dict[str, pa.Array], list[NativeDecodeError]]


def decode_columns_skipping(payloads: Sequence[bytes]) -> Decoded:
    """Like :func:`decode_columns`, but a malformed payload contributes no rows and is
    reported instead (in payload order) — still one pass over the batch."""
    return _decode(payloads, skip_malformed=True)


def _decode(payloads: Sequence[bytes], skip_malformed: bool) -> Decoded:
    library = _load()
    count = len(payloads)
    pointers = (ctypes.c_char_p * max(count, 1))(*payloads)
    lengths = (ctypes.c_int64 * max(count, 1))(*(len(p) for p in payloads))
    result = library.lib.ml_als_decode(pointers, lengths, count, int(skip_malformed))
    if not result:
        raise MemoryError("the access-log decoder could not allocate its result")
    owner = _Owner(library, result)
    r = result.contents
    if r.error == _ERR_MEMORY:
        raise MemoryError("the access-log decoder ran out of memory")
    if r.error:
        error = NativeDecodeError(r.error_payload, r.error_offset, ERRORS.get(r.error, f"error {r.error}"))
        del owner
        raise error
    malformed = [
        NativeDecodeError(r.malformed_payload[i], r.malformed_offset[i], ERRORS.get(code, f"error {code}"))
        for i in range(r.malformed)
        for code in (r.malformed_code[i],)
    ]
    rows = r.rows
    bits = _bitmap_bytes(rows)
    columns: dict[str, pa.Array] = {}
    for i, (name, arrow_type, nullable) in enumerate(NUMERIC):
        values = pa.foreign_buffer(r.num[i], rows * 8, base=owner)
        valid = pa.foreign_buffer(r.num_valid[i], bits, base=owner) if nullable else None
        column = pa.Array.from_buffers(pa.int64(), rows, [valid, values])
        columns[name] = column if arrow_type == pa.int64() else column.view(arrow_type)
    for i, (name, nullable) in enumerate(STRINGS):
        views = pa.foreign_buffer(r.str_views[i], rows * 16, base=owner)
        data = pa.foreign_buffer(r.str_data[i], r.str_bytes[i], base=owner) if r.str_data[i] else _EMPTY
        valid = pa.foreign_buffer(r.str_valid[i], bits, base=owner) if nullable else None
        columns[name] = pa.Array.from_buffers(pa.string_view(), rows, [valid, views, data])
    return columns, malformed


def main() -> int:
    """``python -m meshloop.accesslog.native``: build the library (what ``make`` runs)."""
    return build_command(build, NativeDecoderUnavailable)


if __name__ == "__main__":
    raise SystemExit(main())
