"""Watch mesh config files and keep the last good config.

:func:`watch` polls file mtimes and sizes (no inotify dependency), debounces bursts
like Istio's push debouncing (quiet for ``debounce_s``, at most ``max_wait_s``
after the first change), then loads and validates and calls ``on_change``.
:class:`MeshState` is the decision the running server makes with the result: apply a
config without errors, refuse one with errors and keep serving the last good one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshloop.mesh.config import MeshConfig
from meshloop.mesh.issues import ValidationIssue
from meshloop.mesh.loader import PathNotFound, collect_files
from meshloop.mesh.metrics import CONFIG_APPLIED, CONFIG_REJECTED, CONFIG_RESOURCES
from meshloop.mesh.validation import load_and_validate

OnChange = Callable[[MeshConfig | None, list[ValidationIssue]], Awaitable[None] | None]
Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(paths: Sequence[str | Path]) -> Fingerprint:
    """``(file, mtime_ns, size, inode)`` of each YAML file under ``paths``; a missing path is a state too."""
    out: list[tuple[str, int, int, int]] = []
    for raw in paths:
        try:
            files = collect_files([raw])
        except PathNotFound:
            out.append((str(raw), -1, -1, -1))
            continue
        for f in files:
            try:
                st = f.stat()
            except OSError:
                out.append((str(f), -1, -1, -1))
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


async def _deliver(paths: Sequence[str | Path], on_change: OnChange) -> None:
    config, issues = await asyncio.to_thread(load_and_validate, paths)
    result = on_change(config, issues)
    if inspect.isawaitable(result):
        await result


async def watch(
    paths: Sequence[str | Path],
    on_change: OnChange,
    debounce_s: float = 0.1,
    max_wait_s: float = 10.0,
    poll_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``on_change(config, issues)`` once at start and after every settled change; runs until cancelled.

    ``config`` is ``None`` when validation found errors (see
    :func:`meshloop.mesh.validation.load_and_validate`); the caller keeps its last good config.
    """
    seen = fingerprint(paths)
    await _deliver(paths, on_change)
    while True:
        await asyncio.sleep(poll_s)
        current = fingerprint(paths)
        if current == seen:
            continue
        seen = current
        first = last = clock()
        while clock() - last < debounce_s and clock() - first < max_wait_s:
            await asyncio.sleep(min(poll_s, debounce_s / 2))
            current = fingerprint(paths)
            if current != seen:
                seen, last = current, clock()
        await _deliver(paths, on_change)


@dataclass(frozen=True)
class Accepted:
    """The config became current. ``changed`` is False when its version equals the previous one."""

    version: str
    changed: bool
    warnings: tuple[ValidationIssue, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """The config was refused; ``reasons`` are the rendered errors. The last good config stays."""

    reasons: tuple[str, ...]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class MeshState:
    """Holds the last good mesh config and says why a change was refused.

    State transitions (:meth:`apply`): no errors -> Accepted, becomes current;
    any error (or no config) -> Rejected, current unchanged.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.config: MeshConfig | None = None
        self._applied_at: float | None = None
        self._rejected_at: float | None = None
        self._rejection: tuple[str, ...] = ()
        self._warnings: tuple[ValidationIssue, ...] = ()

    def apply(self, config: MeshConfig | None, issues: Sequence[ValidationIssue]) -> Accepted | Rejected:
        """Accept ``config`` when ``issues`` hold no error, else keep the current config."""
        errors = tuple(i.render() for i in issues if i.is_error)
        if config is None or errors:
            CONFIG_REJECTED.inc()
            self._rejected_at = self._clock()
            self._rejection = errors or ("no config could be loaded",)
            return Rejected(self._rejection)
        changed = self.config is None or self.config.version != config.version
        self.config = config
        self._applied_at = self._clock()
        self._warnings = tuple(i for i in issues if not i.is_error)
        CONFIG_APPLIED.inc()
        for kind, count in config.counts().items():
            CONFIG_RESOURCES.labels(kind=kind).set(count)
        return Accepted(config.version, changed, self._warnings)

    def status(self) -> dict[str, Any]:
        """For the HTTP API: current version, when applied, resource counts, last rejection."""
        return {
            "version": self.config.version if self.config else None,
            "last_applied": _iso(self._applied_at),
            "resources": self.config.counts() if self.config else {},
            "warnings": [i.render() for i in self._warnings],
            "last_rejection": None
            if self._rejected_at is None
            else {"at": _iso(self._rejected_at), "reasons": list(self._rejection)},
        }
