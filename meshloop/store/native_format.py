"""Arrow tables → one ClickHouse ``Native`` block, for the embedded store's inserts.

Inserting 100k ``access_logs`` rows costs about 0.31 CPU-s when chdb reads them as
Arrow through its ``Python()`` table function, and 0.21 as a Native block, writing the
block here (~0.04) included (``python -m benchmarks.ingest_floor``). ClickHouse converts
each column from the type the block declares to the table's (``String`` into
``LowCardinality(String)``, ``UInt64`` into ``Nullable(UInt64)``), as for any insert.

The format (https://clickhouse.com/docs/interfaces/formats/Native): the number of
columns and of rows as LEB128 varints, then per column its name and type as strings (a
varint length, then the bytes) and its data — fixed-width values little-endian; strings
as a varint length and the bytes; ``Nullable(T)`` a null map (one byte per row, 1 =
NULL) then T's data; ``Array(T)`` each row's end offset as ``UInt64``, then T's data.

Supported Arrow types: integers, floats, booleans, timestamps, dates, strings (any
layout), and lists of strings. :func:`native_block` answers ``None`` for any other
column (the caller falls back to ``Python()``); a column with nulls is declared
``Nullable``, and a null list is written as an empty array.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meshloop.cbuild import CBuildError, build_command, compile_shared, library_path

__all__ = ["NativeFormatUnavailable", "build", "native_block", "native_block_parts"]

SOURCE = Path(__file__).with_name("_native_strings.c")
LIBRARY = SOURCE.with_suffix(".so")


class NativeFormatUnavailable(RuntimeError):
    """The C string writer could not be built or loaded (the message says why)."""


def build(target: Path = LIBRARY, flags: Sequence[str] = ("-O3",)) -> Path:
    """Compile the C string writer into ``target`` with ``flags``; return it."""
    try:
        return compile_shared(SOURCE, target, flags)
    except CBuildError as exc:
        raise NativeFormatUnavailable(str(exc)) from None


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_P = ctypes.c_void_p
_I = ctypes.c_int64


LIBRARY_ENV = "MESHLOOP_NATIVE_STRINGS_LIBRARY"
"""Environment variable naming a prebuilt library to load instead (a sanitizer build)."""


def _load() -> ctypes.CDLL:
    global _library
    with _lock:
        if _library is None:
            library = ctypes.CDLL(str(library_path(LIBRARY_ENV, SOURCE, LIBRARY, build)))
            library.ml_native_string_views.restype = _I
            library.ml_native_string_views.argtypes = [_P, _P, _P, _I, _I, ctypes.c_char_p]
            library.ml_native_string_offsets.restype = _I
            library.ml_native_string_offsets.argtypes = [_P, _P, _P, _I, _I, ctypes.c_char_p]
            library.ml_native_lc_views.restype = _P
            library.ml_native_lc_views.argtypes = [_P, _P, _P, _I, _I]
            library.ml_native_lc_size.restype = _I
            library.ml_native_lc_size.argtypes = [_P]
            library.ml_native_lc_write.restype = _I
            library.ml_native_lc_write.argtypes = [_P, ctypes.c_char_p]
            library.ml_native_lc_free.restype = None
            library.ml_native_lc_free.argtypes = [_P]
            _library = library
        return _library


_bytes_of_size = ctypes.pythonapi.PyBytes_FromStringAndSize
_bytes_of_size.restype = ctypes.py_object
_bytes_of_size.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]


def _filled_bytes(size: int, fill: Callable[[bytes], int]) -> bytes:
    """A new ``bytes`` of ``size`` that ``fill`` writes (through its buffer) before anyone
    else sees it — the C API's ``PyBytes_FromStringAndSize(NULL, size)`` idiom, so the
    data is written once, with no zero-fill and no copy (chdb's ``append`` takes bytes)."""
    if size == 0:
        return b""  # the shared empty bytes: never written to
    out: bytes = _bytes_of_size(None, size)
    written = fill(out)
    if written != size:
        raise AssertionError(f"native writer wrote {written} of {size} bytes")
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data)) + data


_FIXED = {
    pa.int8(): "Int8", pa.int16(): "Int16", pa.int32(): "Int32", pa.int64(): "Int64",
    pa.uint8(): "UInt8", pa.uint16(): "UInt16", pa.uint32(): "UInt32", pa.uint64(): "UInt64",
    pa.float32(): "Float32", pa.float64(): "Float64", pa.date32(): "Date32",
}  # fmt: skip
_TIMESTAMP_SCALE = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _is_string(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )  # fmt: skip


def _base_type(arrow_type: pa.DataType) -> str | None:
    """The Native type a column of ``arrow_type`` is written as (without Nullable)."""
    if arrow_type in _FIXED:
        return _FIXED[arrow_type]
    if pa.types.is_boolean(arrow_type):
        return "Bool"
    if pa.types.is_timestamp(arrow_type):
        scale = _TIMESTAMP_SCALE[arrow_type.unit]
        zone = f", '{arrow_type.tz}'" if arrow_type.tz and "'" not in arrow_type.tz else ""
        return f"DateTime64({scale}{zone})"
    if _is_string(arrow_type):
        return "String"
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and _is_string(
        arrow_type.value_type
    ):
        return "Array(String)"
    return None


def native_block(table: pa.Table, low_cardinality: Collection[str] = ()) -> bytes | None:
    """``table`` as one Native block, or None if a column's type is not supported.

    String columns named in ``low_cardinality`` without nulls are written as
    ``LowCardinality(String)``: for columns the table stores that way, ClickHouse then
    takes the dictionary as it is instead of hashing every row again.
    """
    parts = native_block_parts(table, low_cardinality)
    return None if parts is None else b"".join(parts)


def native_block_parts(
    table: pa.Table, low_cardinality: Collection[str] = ()
) -> list[bytes | memoryview] | None:
    """:func:`native_block` as consecutive pieces (no copy into one buffer), or None."""
    base_types = [_base_type(field.type) for field in table.schema]
    if any(t is None for t in base_types):
        return None
    parts: list[bytes | memoryview] = [_varint(table.num_columns), _varint(table.num_rows)]
    for name, base, column in zip(table.column_names, base_types, table.columns, strict=True):
        assert base is not None
        if base == "String" and name in low_cardinality and column.null_count == 0 and len(column):
            parts += [_string(name), _string("LowCardinality(String)"), _low_cardinality(column)]
            continue
        nullable = column.null_count > 0 and not base.startswith("Array")
        parts += [_string(name), _string(f"Nullable({base})" if nullable else base)]
        if nullable:
            parts.append(np.concatenate([_null_map(chunk) for chunk in column.chunks]).tobytes())
        if base.startswith("Array"):
            parts.extend(_string_lists(column))
        else:
            parts.extend(_data(chunk) for chunk in column.chunks)
    return parts


def _no_bytes() -> np.ndarray:
    return np.empty(0, dtype=np.uint8)


def _validity_bits(chunk: pa.Array) -> np.ndarray:
    """One uint8 per row of ``chunk``: 1 when the row is valid."""
    bitmap = chunk.buffers()[0]
    if bitmap is None or chunk.null_count == 0:
        return np.ones(len(chunk), dtype=np.uint8)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[chunk.offset : chunk.offset + len(chunk)]


def _null_map(chunk: pa.Array) -> np.ndarray:
    return (1 - _validity_bits(chunk)).astype(np.uint8)


def _data(chunk: pa.Array) -> bytes | memoryview:
    """A chunk's values: fixed-width little-endian, booleans one byte each, or strings."""
    arrow_type = chunk.type
    rows = len(chunk)
    if rows == 0:
        return b""
    if pa.types.is_boolean(arrow_type):
        values = np.unpackbits(np.frombuffer(chunk.buffers()[1], dtype=np.uint8), bitorder="little")
        return (values[chunk.offset : chunk.offset + rows] & _validity_bits(chunk)).tobytes()
    if _is_string(arrow_type):
        return _strings(chunk)
    width = arrow_type.bit_width // 8
    return memoryview(chunk.buffers()[1])[chunk.offset * width : (chunk.offset + rows) * width]


def _view_buffers(chunk: pa.Array) -> tuple[int, ctypes.Array[ctypes.c_void_p], int | None]:
    """(views address, data buffer addresses, validity address) of a string_view chunk."""
    buffers = chunk.buffers()
    data = (ctypes.c_void_p * max(1, len(buffers) - 2))(*(b.address for b in buffers[2:]))
    validity = buffers[0].address if buffers[0] is not None and chunk.null_count else None
    return buffers[1].address, data, validity


def _strings(chunk: pa.Array) -> bytes:
    library = _load()
    if pa.types.is_string(chunk.type):
        chunk = chunk.cast(pa.large_string())
    args: tuple[int | None, ...]
    if pa.types.is_string_view(chunk.type):
        views, data, validity = _view_buffers(chunk)
        args = (views, ctypes.addressof(data), validity, chunk.offset, len(chunk))
        write = library.ml_native_string_views
    else:
        buffers = chunk.buffers()
        validity = buffers[0].address if buffers[0] is not None and chunk.null_count else None
        args = (buffers[1].address, buffers[2].address if buffers[2] is not None else None, validity,
                chunk.offset, len(chunk))  # fmt: skip
        write = library.ml_native_string_offsets
    return _filled_bytes(write(*args, None), lambda out: write(*args, out))


def _low_cardinality(column: pa.ChunkedArray) -> bytes:
    """``LowCardinality(String)`` data: the column's distinct strings once, then each row's
    index into them (hashed in C)."""
    library = _load()
    chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunks[0]
    if not pa.types.is_string_view(chunk.type):
        chunk = chunk.cast(pa.string_view())
    views, data, validity = _view_buffers(chunk)
    dictionary = library.ml_native_lc_views(views, ctypes.addressof(data), validity, chunk.offset, len(chunk))
    if not dictionary:
        raise MemoryError("out of memory building a LowCardinality dictionary")
    try:
        size = library.ml_native_lc_size(dictionary)
        return _filled_bytes(size, lambda out: library.ml_native_lc_write(dictionary, out))
    finally:
        library.ml_native_lc_free(dictionary)


def _string_lists(column: pa.ChunkedArray) -> list[bytes | memoryview]:
    """``Array(String)``: each row's end offset (UInt64, counted from the column's first
    row across chunks), then the strings of the valid rows' lists in order."""
    lengths = [
        np.asarray(pc.list_value_length(chunk).fill_null(0), dtype=np.uint64) for chunk in column.chunks
    ]
    ends = np.cumsum(np.concatenate(lengths) if lengths else _no_bytes(), dtype=np.uint64)
    return [ends.tobytes(), *(_strings(chunk.flatten()) for chunk in column.chunks)]


def main() -> int:
    """``python -m meshloop.store.native_format``: build the library (what ``make`` runs)."""
    return build_command(build, NativeFormatUnavailable)


if __name__ == "__main__":
    raise SystemExit(main())
