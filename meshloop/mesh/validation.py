"""Validate a mesh config: schema problems (from the loader) and semantic rules.

Each rule is a function ``(config, report) -> None`` that calls ``report`` for every
problem; :func:`validate` runs them all and returns the issues sorted by file and
line. The rules and their messages are listed in ``meshloop/mesh/README.md``.
Errors make a config unusable (the running server keeps its last good one);
warnings are printed and the config is still applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from meshloop.mesh.base import Resource
from meshloop.mesh.config import MeshConfig
from meshloop.mesh.issues import FieldPath, Severity, ValidationIssue, format_path
from meshloop.mesh.loader import PathNotFound, load


class Reporter:
    """Collects issues, locating each one through the config's source map."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.issues: list[ValidationIssue] = []

    def __call__(
        self,
        resource: Resource,
        field: FieldPath,
        message: str,
        severity: Severity = "error",
        line_field: FieldPath | None = None,
    ) -> None:
        """Report ``message`` about ``field``; ``line_field`` points the line elsewhere if given."""
        file, line = self.config.source_of(resource, line_field if line_field is not None else field)
        self.issues.append(
            ValidationIssue(
                file,
                line,
                resource.kind,
                resource.namespace,
                resource.name,
                format_path(field),
                message,
                severity,
            )
        )

    def where(self, resource: Resource, field: FieldPath = ()) -> str:
        """``file:line`` of a field, for messages that point at another resource."""
        file, line = self.config.source_of(resource, field)
        return f"{file}:{line}"


Rule = Callable[[MeshConfig, Reporter], None]


def check_duplicate_names(config: MeshConfig, report: Reporter) -> None:
    """The same kind/namespace/name defined twice: every later definition is an error."""
    for entries in config.sources.values():
        first = entries[0][0]
        for resource, _ in entries[1:]:
            report(
                resource,
                ("metadata", "name"),
                f"duplicate {resource.kind} {resource.namespace}/{resource.name}; "
                f"first defined at {report.where(first, ('metadata', 'name'))}",
            )


def _rules() -> tuple[Rule, ...]:
    from meshloop.mesh import resource_rules, route_rules

    return (
        check_duplicate_names,
        *route_rules.RULES,
        *resource_rules.RULES,
    )


def validate(config: MeshConfig) -> list[ValidationIssue]:
    """Every semantic problem of ``config`` (schema problems come from the loader), sorted."""
    report = Reporter(config)
    for rule in _rules():
        rule(config, report)
    return sorted(set(report.issues))


def load_and_validate(paths: Sequence[str | Path]) -> tuple[MeshConfig | None, list[ValidationIssue]]:
    """Load and validate ``paths``. The config is ``None`` when there is any error.

    A missing path is an issue here (not an exception), so that a watcher survives a
    directory being replaced.
    """
    try:
        config, issues = load(paths)
    except PathNotFound as exc:
        return None, [ValidationIssue(exc.path, 0, message="no such file or directory")]
    issues = sorted(set(issues) | set(validate(config)))
    if any(i.is_error for i in issues):
        return None, issues
    return config, issues
