"""Read mesh resources from YAML files and directories, remembering ``file:line`` of every field.

Files are multi-document YAML (``---``). Directories are read recursively
(``*.yaml``, ``*.yml``) in sorted order. Empty documents are skipped. A YAML syntax
error makes the whole file one issue at the parser's line; a document of an unknown
kind, or one the schema refuses, is left out of the config and reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from meshloop.mesh.base import Resource
from meshloop.mesh.config import DocumentSource, MeshConfig
from meshloop.mesh.issues import FieldPath, ValidationIssue
from meshloop.mesh.model import model_for
from meshloop.mesh.schema_errors import translate

DEFAULT_NAMESPACE = "default"
YAML_SUFFIXES = (".yaml", ".yml")


class PathNotFound(FileNotFoundError):
    """A path given to the loader does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        super().__init__(f"{path}: no such file or directory")


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML files under ``paths`` (files as given; directories recursively), without repeats.

    Raises :class:`PathNotFound` for a path that does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
            files.extend(sorted(found))
        elif path.is_file():
            files.append(path)
        else:
            raise PathNotFound(path)
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def field_lines(node: yaml.Node, path: FieldPath = ()) -> dict[FieldPath, int]:
    """Map every field path of a composed YAML node to its 1-based line (keys: the key's line)."""
    out: dict[FieldPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = _key_value(key_node)
            out[path + (key,)] = key_node.start_mark.line + 1
            out.update(field_lines(value_node, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[path + (index,)] = item.start_mark.line + 1
            out.update(field_lines(item, path + (index,)))
    return out


def _key_value(node: yaml.Node) -> str | int:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        try:
            return int(node.value)
        except ValueError:
            return str(node.value)
    return str(node.value)


def _duplicate_keys(node: yaml.Node, path: FieldPath = ()) -> list[tuple[FieldPath, int]]:
    """Keys repeated within one mapping (YAML would silently keep the last)."""
    found: list[tuple[FieldPath, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str | int] = set()
        for key_node, value_node in node.value:
            key = _key_value(key_node)
            if key in seen:
                found.append((path + (key,), key_node.start_mark.line + 1))
            seen.add(key)
            found.extend(_duplicate_keys(value_node, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, path + (index,)))
    return found


def read_documents(text: str, file: str) -> tuple[list[tuple[Any, DocumentSource]], list[ValidationIssue]]:
    """Parse multi-document YAML into ``(data, source)`` pairs; a syntax error is one issue."""
    loader = yaml.SafeLoader(text)
    docs: list[tuple[Any, DocumentSource]] = []
    issues: list[ValidationIssue] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            source = DocumentSource(file, node.start_mark.line + 1, field_lines(node))
            for path, line in _duplicate_keys(node):
                issues.append(_issue(file, line, data, path, "duplicate key (YAML would keep only the last)"))
            docs.append((data, source))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return [], [ValidationIssue(file, line, message=f"YAML syntax error: {problem}")]
    except yaml.YAMLError as exc:
        return [], [ValidationIssue(file, 1, message=f"YAML error: {exc}")]
    finally:
        loader.dispose()
    return docs, issues


def _issue(file: str, line: int, data: Any, path: FieldPath, message: str) -> ValidationIssue:
    from meshloop.mesh.issues import format_path

    kind = namespace = name = ""
    if isinstance(data, dict):
        kind = str(data.get("kind") or "")
        meta = data.get("metadata")
        if isinstance(meta, dict):
            name = str(meta.get("name") or "")
            namespace = str(meta.get("namespace") or DEFAULT_NAMESPACE)
    return ValidationIssue(file, line, kind, namespace, name, format_path(path), message)


def parse_resource(data: Any, source: DocumentSource) -> tuple[Resource | None, list[ValidationIssue]]:
    """Turn one document into a resource, or into the issues explaining why not."""
    if not isinstance(data, dict):
        return None, [ValidationIssue(source.file, source.line, message="a document must be a mapping")]
    kind, api_version = data.get("kind"), data.get("apiVersion")
    for key, value in (("apiVersion", api_version), ("kind", kind)):
        if not isinstance(value, str) or not value:
            line = source.line_of((key,))
            return None, [_issue(source.file, line, data, (key,), "required field is missing")]
    assert isinstance(kind, str) and isinstance(api_version, str)
    try:
        model = model_for(api_version, kind)
    except ValueError as exc:
        bad = "kind" if str(exc).startswith("unknown kind") else "apiVersion"
        return None, [_issue(source.file, source.line_of((bad,)), data, (bad,), str(exc))]
    meta = data.get("metadata")
    if isinstance(meta, dict) and not meta.get("namespace"):
        data = {**data, "metadata": {**meta, "namespace": DEFAULT_NAMESPACE}}
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [
            _issue(source.file, source.line_of(path), data, path, message)
            for path, message in translate(exc, data)
        ]


def load(paths: Sequence[str | Path]) -> tuple[MeshConfig, list[ValidationIssue]]:
    """Load every resource under ``paths``; issues are schema-level (see :mod:`.validation`).

    Raises :class:`PathNotFound` when a path does not exist.
    """
    loaded: list[tuple[Resource, DocumentSource | None]] = []
    issues: list[ValidationIssue] = []
    for path in collect_files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ValidationIssue(str(path), 1, message=f"cannot read: {exc}"))
            continue
        docs, doc_issues = read_documents(text, str(path))
        issues.extend(doc_issues)
        for data, source in docs:
            resource, problems = parse_resource(data, source)
            issues.extend(problems)
            if resource is not None:
                loaded.append((resource, source))
    return MeshConfig.build(loaded), sorted(issues)
