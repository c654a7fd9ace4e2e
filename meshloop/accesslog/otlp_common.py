"""What the OTLP and Envoy metrics decoders share: the error, dtypes, the request →
resource → scope walk and the per-scope columns (see :mod:`meshloop.accesslog.otlp`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl
from google.protobuf.message import DecodeError as _ProtobufDecodeError

from meshloop.accesslog.otlp_columns import Maps, any_string


class DecodeError(ValueError):
    """A payload is not a valid serialized message of the expected type."""


S, TS, U8, U32, I32, U64, F64 = (
    pl.String(), pl.Datetime("ns"), pl.UInt8(), pl.UInt32(), pl.Int32(), pl.UInt64(), pl.Float64()
)


def parse_all(message_type: Any, payloads: Sequence[bytes]) -> list[Any]:
    """Every payload parsed as ``message_type``; the first bad one raises :class:`DecodeError`."""
    parsed = []
    for index, payload in enumerate(payloads):
        try:
            parsed.append(message_type.FromString(payload))
        except (_ProtobufDecodeError, TypeError, ValueError) as exc:
            raise DecodeError(
                f"request {index}: not a valid {message_type.DESCRIPTOR.full_name}: {exc}"
            ) from exc
    return parsed


def walk_scopes(
    scopes: Scopes,
    message_type: Any,
    requests: Sequence[bytes],
    resources: str,
    scoped_field: str,
    items: str,
) -> Iterator[tuple[int, Any]]:
    """Walk OTLP's request → resource → scope nesting (``resource_logs`` / ``scope_logs``
    / ``log_records`` and the like): yield each scope's row in ``scopes`` and its items."""
    for request in parse_all(message_type, requests):
        for top in getattr(request, resources):
            resource, service = resource_pairs(top.resource)
            for scope in getattr(top, scoped_field):
                row = scopes.add(resource, top.schema_url, service, scope.scope, scope.schema_url)
                yield row, getattr(scope, items)


def enum_name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else ""


class Scopes:
    """One row per (resource, scope): the columns every record of that scope repeats.

    Records keep only the row index; :meth:`take` expands a column with one gather.
    """

    def __init__(self) -> None:
        self.resource_attributes = Maps()
        self.scope_attributes = Maps()
        self.columns: dict[str, list[Any]] = {
            "ResourceSchemaUrl": [], "ServiceName": [], "ScopeName": [], "ScopeVersion": [],
            "ScopeDroppedAttrCount": [], "ScopeSchemaUrl": [],
        }
        self._built: dict[str, pl.Series] = {}

    def add(
        self, resource: list[tuple[str, str]], resource_url: str, service: str,
        scope: Any, scope_url: str,
    ) -> int:
        self.resource_attributes.add_pairs(resource)
        self.scope_attributes.add_attributes(scope.attributes)
        c = self.columns
        c["ResourceSchemaUrl"].append(resource_url)
        c["ServiceName"].append(service)
        c["ScopeName"].append(scope.name)
        c["ScopeVersion"].append(scope.version)
        c["ScopeDroppedAttrCount"].append(scope.dropped_attributes_count)
        c["ScopeSchemaUrl"].append(scope_url)
        return len(c["ServiceName"]) - 1

    def take(self, name: str, rows: list[int], dtype: pl.DataType) -> pl.Series:
        if name not in self._built:
            if name == "ResourceAttributes":
                self._built[name] = self.resource_attributes.series(name)
            elif name == "ScopeAttributes":
                self._built[name] = self.scope_attributes.series(name)
            else:
                self._built[name] = pl.Series(name, self.columns[name], dtype=dtype)
        return self._built[name].gather(rows)

    def expand(self, schema: pl.Schema, rows: list[int], columns: dict[str, Any]) -> None:
        for name in ("ResourceAttributes", "ScopeAttributes", *self.columns):
            if name in schema:
                columns[name] = self.take(name, rows, schema[name])


def resource_pairs(resource: Any) -> tuple[list[tuple[str, str]], str]:
    """Rendered resource attributes and the service name (first ``service.name``)."""
    pairs = [(kv.key, any_string(kv.value)) for kv in resource.attributes]
    service = next((value for key, value in pairs if key == "service.name"), "")
    return pairs, service


def transpose(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Per-record tuples → one list per column (a C-speed transpose)."""
    if not rows:
        return {name: [] for name in names}
    return {name: list(column) for name, column in zip(names, zip(*rows, strict=True), strict=True)}
