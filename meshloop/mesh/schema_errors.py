"""Translate pydantic validation errors into field paths and plain messages."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from meshloop.mesh.issues import FieldPath


def _document_path(loc: tuple[str | int, ...], data: Any, missing: bool) -> FieldPath:
    """Keep the loc segments that exist in the document (drops pydantic's union tags)."""
    path: list[str | int] = []
    current = data
    for i, segment in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and segment in current:
            path.append(segment)
            current = current[segment]
        elif isinstance(current, list) and isinstance(segment, int) and segment < len(current):
            path.append(segment)
            current = current[segment]
        elif last and missing:
            path.append(segment)
        elif isinstance(current, dict) and not last:
            # a union member tag such as "int" or "function-after[...]": not a document key
            continue
    return tuple(path)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def message_for(error: ErrorDetails) -> str:
    """A plain message for one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("literal_error", "enum"):
        return f"unknown value {_show(value)}; expected one of {ctx.get('expected', '')}"
    if kind == "greater_than_equal":
        return f"must be >= {_show(ctx['ge'])}, got {_show(value)}"
    if kind == "greater_than":
        return f"must be > {_show(ctx['gt'])}, got {_show(value)}"
    if kind == "less_than_equal":
        return f"must be <= {_show(ctx['le'])}, got {_show(value)}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer, got {_show(value)}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {_show(value)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {_show(value)}"
    if kind == "string_type":
        return f"expected a string, got {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_show(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_show(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def translate(exc: ValidationError, data: Any) -> list[tuple[FieldPath, str]]:
    """``(field path, message)`` per distinct field, in pydantic's order."""
    out: list[tuple[FieldPath, str]] = []
    seen: set[FieldPath] = set()
    for error in exc.errors():
        if error["type"] == "too_short" and error.get("input"):
            continue  # a list whose items all failed: the item errors say why
        path = _document_path(tuple(error["loc"]), data, error["type"] == "missing")
        if path in seen:
            continue
        seen.add(path)
        out.append((path, message_for(error)))
    return out
