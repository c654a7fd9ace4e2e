"""MeshControl: the mesh's desired state — the user's config plus overrides — and its changes.

- The user's config comes from ``--mesh-dir`` (Istio YAML), watched and debounced
  (:func:`meshloop.mesh.watch.watch`); an invalid change is refused, the last good
  config keeps being served, and the reasons show in :meth:`MeshControl.status`.
- Overrides come from controllers (in process) and the HTTP API: route weights,
  circuit breakers, outlier detection, authorization policies. Each is validated
  against the current config before it is accepted, layered over the user's config by
  the translation, visible in status, removable.
- Every accepted or rejected change is recorded in the ``mesh_changes`` table.
Translation and pushes are :class:`~meshloop.xds.pusher.MeshPusher`'s job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from meshloop.mesh import MeshConfig, ValidationIssue
from meshloop.mesh.security import AuthorizationPolicy
from meshloop.mesh.watch import Accepted, MeshState, watch
from meshloop.store.buffered import BufferedWriter
from meshloop.xds.overrides import CircuitBreaker, OutlierOverride, Overrides, RouteWeights
from meshloop.xds.pusher import MeshPusher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshChange:
    """One row of ``mesh_changes``."""

    time: float
    kind: str
    action: str
    target: str
    actor: str
    detail: str


def changes_frame(changes: Iterable[MeshChange]) -> pl.DataFrame:
    """Changes as a frame of the ``mesh_changes`` columns."""
    rows = [asdict(change) for change in changes]
    schema = {
        "time": pl.Float64,
        **{name: pl.String for name in ("kind", "action", "target", "actor", "detail")},
    }
    frame = pl.DataFrame(rows, schema=schema)
    return frame.with_columns((pl.col("time") * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC")))


class MeshControl:
    """See the module docstring. Use from the event loop's thread."""

    def __init__(
        self, pusher: MeshPusher, changes: BufferedWriter[MeshChange] | None, mesh_paths: Sequence[Path] = ()
    ) -> None:
        self.pusher = pusher
        self.changes = changes
        self.mesh_paths = tuple(mesh_paths)
        self.state = MeshState()

    # -- the user's config ------------------------------------------------------------------
    async def watch(self) -> None:
        """Follow ``mesh_paths`` until cancelled (nothing to do without them)."""
        if self.mesh_paths:
            await watch(self.mesh_paths, self._on_change)

    def _on_change(self, config: MeshConfig | None, issues: list[ValidationIssue]) -> None:
        self.apply_config(config, issues)

    def apply_config(self, config: MeshConfig | None, issues: list[ValidationIssue]) -> bool:
        """Take a loaded config if it is valid; True when it is now the served one."""
        result = self.state.apply(config, issues)
        if isinstance(result, Accepted):
            for warning in result.warnings:
                log.warning("mesh config: %s", warning.render())
            if result.changed:
                assert self.state.config is not None
                log.info("mesh config %s accepted (%s)", result.version, ", ".join(map(str, self.mesh_paths)))
                self.pusher.update_config(self.state.config)
                self._record(
                    "config", "accepted", result.version, "mesh-dir", {"warnings": len(result.warnings)}
                )
            return True
        log.error(
            "mesh config refused; still serving %s:\n  %s",
            self.state.config.version if self.state.config else "nothing",
            "\n  ".join(result.reasons[:20]),
        )
        self._record("config", "rejected", "", "mesh-dir", {"reasons": list(result.reasons)[:50]})
        return False

    # -- overrides --------------------------------------------------------------------------
    def set_route_weights(
        self, host: str, weights: dict[str, int], route: str | None = None, actor: str = "api"
    ) -> None:
        """Send ``weights`` (subset → percent, total 100) of ``host``'s traffic."""
        entry = RouteWeights.of(host, {str(k): int(v) for k, v in weights.items()}, route)
        self._override(
            self.pusher.overrides.with_weights(entry), "route_weights", "set", host, actor, asdict(entry)
        )

    def remove_route_weights(self, host: str, route: str | None = None, actor: str = "api") -> None:
        self._override(
            self.pusher.overrides.without_weights(host, route),
            "route_weights",
            "removed",
            host,
            actor,
            {"route": route},
        )

    def set_circuit_breaker(
        self, host: str, subset: str | None = None, actor: str = "api", **thresholds: int
    ) -> None:
        entry = CircuitBreaker(host, subset, **thresholds)
        self._override(
            self.pusher.overrides.with_circuit_breaker(entry),
            "circuit_breaker",
            "set",
            host,
            actor,
            asdict(entry),
        )

    def remove_circuit_breaker(self, host: str, subset: str | None = None, actor: str = "api") -> None:
        overrides = self.pusher.overrides.without_circuit_breaker(host, subset)
        self._override(overrides, "circuit_breaker", "removed", host, actor, {"subset": subset})

    def set_outlier_detection(self, host: str, actor: str = "api", **settings: Any) -> None:
        entry = OutlierOverride(host, **settings)
        self._override(
            self.pusher.overrides.with_outlier(entry), "outlier_detection", "set", host, actor, asdict(entry)
        )

    def remove_outlier_detection(self, host: str, actor: str = "api") -> None:
        self._override(
            self.pusher.overrides.without_outlier(host), "outlier_detection", "removed", host, actor, {}
        )

    def set_authorization_policy(self, policy: AuthorizationPolicy, actor: str = "api") -> None:
        target = f"{policy.namespace}/{policy.name}"
        detail = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
        self._override(
            self.pusher.overrides.with_authorization_policy(policy),
            "authorization_policy",
            "set",
            target,
            actor,
            detail,
        )

    def remove_authorization_policy(self, namespace: str, name: str, actor: str = "api") -> None:
        overrides = self.pusher.overrides.without_authorization_policy(namespace, name)
        self._override(overrides, "authorization_policy", "removed", f"{namespace}/{name}", actor, {})

    def _override(
        self, overrides: Overrides, kind: str, action: str, target: str, actor: str, detail: Any
    ) -> None:
        self.pusher.set_overrides(overrides)  # raises OverrideError, keeping the current ones
        self._record(kind, action, target, actor, detail)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The served config (version, resources, last rejection), overrides and pushes."""
        return {
            "config": self.state.status(),
            "paths": [str(p) for p in self.mesh_paths],
            "xds": self.pusher.status(),
        }

    def _record(self, kind: str, action: str, target: str, actor: str, detail: Any) -> None:
        if self.changes is not None:
            text = json.dumps(detail, default=str, sort_keys=True)
            self.changes.add(MeshChange(time.time(), kind, action, target, actor, text))
