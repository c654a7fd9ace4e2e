"""Durations as Istio writes them: Go ``time.ParseDuration`` syntax.

Istio's YAML carries ``google.protobuf.Duration`` fields; its Kubernetes CRDs and
``istioctl`` accept Go-style strings: a sequence of decimal numbers, each with a
unit, e.g. ``"1s"``, ``"500ms"``, ``"1.5s"``, ``"1m30s"``, ``"2h"``. Units: ``ns``,
``us`` (``µs``), ``ms``, ``s``, ``m``, ``h``. Negative durations are refused (Istio
rejects them; Envoy NACKs them). https://pkg.go.dev/time#ParseDuration
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_HINT = 'use a number with a unit, e.g. "1s", "500ms", "1.5s", "1m30s"'


@dataclass(frozen=True, order=True)
class Duration:
    """A non-negative duration, exact to the nanosecond."""

    nanos: int

    @property
    def seconds(self) -> float:
        return self.nanos / 1e9

    @property
    def millis(self) -> float:
        return self.nanos / 1e6

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse Go duration syntax; raise ``ValueError`` saying what is wrong."""
        s = text.strip()
        if s.startswith("-"):
            raise ValueError(f'invalid duration "{text}": must not be negative')
        s = s.removeprefix("+")
        if s == "0":
            return cls(0)
        pos, total = 0, 0
        while pos < len(s):
            m = _PART.match(s, pos)
            if m is None:
                raise ValueError(f'invalid duration "{text}": {_HINT}')
            number, unit = m.group(1), m.group(2)
            whole, _, frac = number.partition(".")
            scale = _UNIT_NANOS[unit]
            total += int(whole or "0") * scale
            if frac:
                total += int(frac) * scale // 10 ** len(frac)
            pos = m.end()
        if not s:
            raise ValueError(f'invalid duration "{text}": {_HINT}')
        return cls(total)

    def __str__(self) -> str:
        """Protobuf JSON form (``"1.5s"``), which Istio and Envoy both accept."""
        whole, frac = divmod(self.nanos, 1_000_000_000)
        if frac == 0:
            return f"{whole}s"
        return f"{whole}.{frac:09d}".rstrip("0") + "s"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_plain_validator_function(
            _coerce, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


def _coerce(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        return Duration.parse(value)
    raise ValueError(f"invalid duration {value!r}: {_HINT}")


def positive(value: Duration) -> Duration:
    """After-validator for fields Istio requires to be at least 1 ms."""
    if value.nanos < 1_000_000:
        raise ValueError(f'duration "{value}" must be at least 1ms')
    return value
