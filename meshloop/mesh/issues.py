"""``ValidationIssue``: one problem in the mesh config, located at ``file:line``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class ValidationIssue:
    """A schema or semantic problem. Sorted by file, then line.

    ``kind``/``namespace``/``name`` are empty for problems above a resource (a YAML
    syntax error, a document that is not a mapping); ``field`` is a path such as
    ``spec.http[0].route[1].weight``, empty for the whole resource.
    """

    file: str
    line: int
    kind: str = ""
    namespace: str = ""
    name: str = ""
    field: str = ""
    message: str = ""
    severity: Severity = "error"

    def render(self) -> str:
        """``file:line: Kind/namespace/name: field: message`` (absent parts left out)."""
        parts = [f"{self.file}:{self.line}"]
        if self.kind:
            parts.append(f"{self.kind}/{self.namespace}/{self.name}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.render()

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def format_path(path: FieldPath) -> str:
    """``("spec", "http", 0, "route")`` -> ``spec.http[0].route``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> FieldPath:
    """Inverse of :func:`format_path`."""
    return tuple(int(m.group(2)) if m.group(2) else m.group(1) for m in _SEGMENT.finditer(text))
