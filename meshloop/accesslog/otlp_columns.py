"""Column builders for the OTLP → polars conversion in :mod:`meshloop.accesslog.otlp`.

Pure helpers: pdata-compatible string forms of OTLP values (``AsString``), trace/span id
hex, and accumulators that collect one column in a single pass and turn it into a polars
Series with one Arrow call. Nothing here knows a table.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from itertools import accumulate, chain
from typing import Any, cast

import polars as pl
import pyarrow as pa

I64_MAX = (1 << 63) - 1
KEY_VALUE = pl.Struct({"key": pl.String(), "value": pl.String()})
MAP = pl.List(KEY_VALUE)
"""How a ClickHouse ``Map(LowCardinality(String), String)`` travels in a polars frame."""

_ARROW_KV = pa.struct([("key", pa.large_string()), ("value", pa.large_string())])


# --- pdata's Value.AsString --------------------------------------------------------------
def go_float(value: float) -> str:
    """A float64 as pdata's ``float64AsString`` writes it (ES6 number form, Go's digits)."""
    if math.isnan(value):
        return "json: unsupported value: NaN"
    if math.isinf(value):
        return "json: unsupported value: " + ("+Inf" if value > 0 else "-Inf")
    text = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # Python's repr already uses the exponent form here; Go drops the exponent's 0.
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits}"
    if "e" in text:  # Python switches to exponents earlier than Go does; same digits
        text = format(Decimal(text), "f")
    elif text.endswith(".0"):
        text = text[:-2]
    return text


class _Unsupported(Exception):
    """A NaN or infinity inside a map or array: Go's json.Marshal fails, AsString gives ''."""


def _json_string(text: str) -> str:
    # encoding/json without HTML escaping still escapes U+2028 and U+2029.
    return (
        json.dumps(text, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def _json_value(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _json_string(value.string_value)
    if kind is None:
        return "null"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        number = value.double_value
        if not math.isfinite(number):
            raise _Unsupported
        return go_float(number)
    if kind == "bytes_value":
        return '"' + base64.b64encode(value.bytes_value).decode("ascii") + '"'
    if kind == "array_value":
        return "[" + ",".join(_json_value(item) for item in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return _json_object(value.kvlist_value.values)
    return "null"


def _json_object(pairs: Iterable[Any]) -> str:
    latest = {pair.key: pair.value for pair in pairs}  # a Go map: the last duplicate wins
    items = (f"{_json_string(key)}:{_json_value(latest[key])}" for key in sorted(latest))
    return "{" + ",".join(items) + "}"


def any_string(value: Any) -> str:
    """An OTLP ``AnyValue`` as pdata's ``Value.AsString()`` renders it.

    Strings as they are; ints in decimal; bools ``true``/``false``; doubles as
    :func:`go_float`; bytes standard base64; arrays and key/value lists as compact JSON
    (map keys sorted, no HTML escaping — Go's ``encoding/json``); unset → ``''``.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind is None:
        return ""
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return go_float(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    try:
        if kind == "array_value":
            return "[" + ",".join(_json_value(item) for item in value.array_value.values) + "]"
        if kind == "kvlist_value":
            return _json_object(value.kvlist_value.values)
    except _Unsupported:
        return ""
    return ""


def hex_or_empty(raw: bytes) -> str:
    """A trace or span id as lowercase hex, ``''`` when absent or all zeros (pdata's
    ``TraceIDToHexOrEmptyString``)."""
    return raw.hex() if raw.strip(b"\0") else ""


def hex_or_zeros(raw: bytes, size: int) -> str:
    """An exemplar's id as the exporter writes it: hex of the fixed-size id, zeros if unset."""
    return raw.hex() if raw else "00" * size


# --- accumulators --------------------------------------------------------------------------
class Maps:
    """One ``Map`` column: rows of key/value pairs, flattened with offsets."""

    __slots__ = ("keys", "values", "offsets")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.values: list[str] = []
        self.offsets: list[int] = [0]

    def add_attributes(self, attributes: Iterable[Any]) -> None:
        """Append a row from OTLP ``KeyValue``s, values rendered by :func:`any_string`."""
        keys, values = self.keys, self.values
        for pair in attributes:
            keys.append(pair.key)
            value = pair.value
            # the common case inline: a call per attribute is a fifth of the decode time
            if value.WhichOneof("value") == "string_value":
                values.append(value.string_value)
            else:
                values.append(any_string(value))
        self.offsets.append(len(keys))

    def add_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Append a row of (key, value) string pairs."""
        for key, value in pairs:
            self.keys.append(key)
            self.values.append(value)
        self.offsets.append(len(self.keys))

    def arrow(self) -> pa.Array:
        entries = pa.StructArray.from_arrays(
            [pa.array(self.keys, pa.large_string()), pa.array(self.values, pa.large_string())],
            fields=list(_ARROW_KV),
        )
        return pa.LargeListArray.from_arrays(pa.array(self.offsets, pa.int64()), entries)

    def series(self, name: str) -> pl.Series:
        return _from_arrow(name, self.arrow())


class MapLists:
    """One ``Array(Map)`` column (a Nested ``Attributes``): rows of lists of maps."""

    __slots__ = ("maps", "offsets")

    def __init__(self) -> None:
        self.maps = Maps()
        self.offsets: list[int] = [0]

    def end_row(self) -> None:
        self.offsets.append(len(self.maps.offsets) - 1)

    def series(self, name: str) -> pl.Series:
        outer = pa.LargeListArray.from_arrays(pa.array(self.offsets, pa.int64()), self.maps.arrow())
        return _from_arrow(name, outer)


def _from_arrow(name: str, array: pa.Array) -> pl.Series:
    return pl.Series(name, array)


def _nanos(values: Sequence[int]) -> pl.Series:
    """uint64 nanoseconds → Datetime(ns); beyond year 2262 clamps (Int64 is the limit)."""
    return pl.Series(values, dtype=pl.UInt64).clip(upper_bound=I64_MAX).cast(pl.Int64)


def series(name: str, values: Any, dtype: pl.DataType) -> pl.Series:
    """A column of ``dtype`` from Python values (or a ready Series, checked).

    Datetime columns take integer nanoseconds (uint64 as in OTLP); list columns take
    lists of the inner values.
    """
    if isinstance(values, pl.Series):
        if values.dtype != dtype:
            raise AssertionError(f"column {name}: built {values.dtype}, schema says {dtype}")
        return values.alias(name)
    if isinstance(dtype, pl.Datetime):
        return _nanos(values).cast(dtype).alias(name)
    if isinstance(dtype, pl.List):  # flat values + offsets: one Arrow call, no per-row work
        inner_dtype = cast(pl.DataType, dtype.inner)
        inner = series(name, list(chain.from_iterable(values)), inner_dtype).to_arrow()
        offsets = pa.array([0, *accumulate(map(len, values))], pa.int64())
        return pl.Series(name, pa.LargeListArray.from_arrays(offsets, inner)).cast(dtype)
    return pl.Series(name, values, dtype=dtype)


def frame(schema: pl.Schema, columns: dict[str, Any]) -> pl.DataFrame:
    """The one DataFrame of a call: ``columns`` (name → values or Series) in ``schema`` order."""
    return pl.DataFrame([series(name, columns[name], dtype) for name, dtype in schema.items()])
