"""MeshPusher: rebuild and publish every connected proxy's snapshot when the mesh changes.

Istio's push debouncing (https://github.com/istio/istio/blob/master/pilot/pkg/xds/discovery.go,
``PILOT_DEBOUNCE_AFTER``/``PILOT_DEBOUNCE_MAX``): a change waits until no other change came
for ``debounce_s`` (100 ms), but never longer than ``max_delay_s`` (10 s) after the first;
then every known node is rebuilt once. A node is known from the moment its Envoy first asks
for config: the pusher publishes per-role *default* snapshots (``SnapshotCache.set_default``)
whose match records the node and schedules its own build at once (no debounce, as Istio's
initial push). Snapshots whose versions did not change are not republished. A failed build
keeps the node's previous snapshot, increments ``meshloop_xds_build_errors_total`` and shows
its reason in :meth:`MeshPusher.status`. Use it from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from meshloop.errors import MeshloopError
from meshloop.mesh import MeshConfig
from meshloop.xds.cache import NodeInfo, SnapshotCache
from meshloop.xds.generate import build_snapshot
from meshloop.xds.overrides import Overrides
from meshloop.xds.proxy import Proxy, Role, proxy_from_node
from meshloop.xds.push import Hooks, PushContext
from meshloop.xds.snapshot import Snapshot

__all__ = ["MeshPusher"]

log = logging.getLogger(__name__)

BUILD_ERRORS = Counter(
    "meshloop_xds_build_errors_total",
    "Snapshot builds that failed (the proxy keeps its previous snapshot).",
)
BUILDS = Counter(
    "meshloop_xds_snapshot_builds_total",
    "Snapshot builds by result: published, unchanged (same versions, not republished) or failed.",
    ["result"],
)
MAX_NODES = 100_000


class MeshPusher:
    """Keeps ``cache`` in step with the latest :class:`MeshConfig` and :class:`Overrides`."""

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        hooks: Hooks | None = None,
        debounce_s: float = 0.1,
        max_delay_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.hooks = hooks or Hooks()
        self.debounce_s = debounce_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self.config: MeshConfig | None = None
        self.overrides = Overrides()
        self._nodes: dict[str, NodeInfo] = {}
        self._errors: dict[str, str] = {}
        self._first_change: float | None = None
        self._last_change = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.pushes = 0
        self.last_push_at: float | None = None

    # --- inputs --------------------------------------------------------------------------
    def update_config(self, config: MeshConfig) -> None:
        """A new mesh config: rebuild every node after the debounce."""
        self.config = config
        self._note_change()

    def set_overrides(self, overrides: Overrides) -> None:
        """New overrides; raises :class:`~meshloop.xds.overrides.OverrideError` (and keeps the
        current ones) when the current config cannot honour them."""
        if self.config is not None:
            overrides.check(self.config)
        self.overrides = overrides
        self._note_change()

    def _note_change(self) -> None:
        now = self._clock()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._changed.set()

    # --- loop ----------------------------------------------------------------------------
    def start(self) -> MeshPusher:
        """Start the debounce loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            while True:
                first = self._first_change if self._first_change is not None else self._clock()
                due = min(self._last_change + self.debounce_s, first + self.max_delay_s)
                wait = due - self._clock()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)  # the debounce timer itself
            self._changed.clear()
            self._first_change = None
            self.push_all()

    # --- building ------------------------------------------------------------------------
    def push_all(self) -> None:
        """Rebuild defaults and every known node now (what the debounce loop calls)."""
        if self.config is None:
            return
        push = PushContext(self.config, self.overrides, self.hooks)
        self._publish_defaults(push)
        for node in list(self._nodes.values()):
            self._push_node(node, push)
        self.pushes += 1
        self.last_push_at = self._clock()

    def _publish_defaults(self, push: PushContext) -> None:
        roles: tuple[Role, ...] = ("sidecar", "gateway")
        for role in roles:
            proxy = Proxy(role=role, id=f"default~{role}", namespace="default")
            try:
                snapshot = build_snapshot(proxy, push)
            except MeshloopError as exc:
                BUILD_ERRORS.inc()
                self._errors[proxy.id] = str(exc)
                continue
            self._errors.pop(proxy.id, None)
            self.cache.set_default(f"meshloop-{role}", self._matcher(role), snapshot)

    def _matcher(self, role: Role) -> Callable[[NodeInfo], bool]:
        def match(node: NodeInfo) -> bool:
            try:
                proxy_role = proxy_from_node(node).role
            except ValueError:
                return False
            if node.id not in self._nodes and len(self._nodes) < MAX_NODES:
                self._nodes[node.id] = node
                asyncio.get_running_loop().call_soon(self._push_new, node.id)
            return proxy_role == role

        return match

    def _push_new(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is not None and self.config is not None:
            self._push_node(node, PushContext(self.config, self.overrides, self.hooks))

    def _push_node(self, node: NodeInfo, push: PushContext) -> Snapshot | None:
        try:
            snapshot = build_snapshot(proxy_from_node(node), push)
        except (MeshloopError, ValueError) as exc:
            BUILDS.labels("failed").inc()
            BUILD_ERRORS.inc()
            self._errors[node.id] = str(exc)
            log.warning("xds: keeping the previous snapshot of %s: %s", node.id, exc)
            return None
        self._errors.pop(node.id, None)
        previous = self.cache.snapshot(node.id)
        if previous is not None and previous.versions() == snapshot.versions():
            BUILDS.labels("unchanged").inc()
            return previous
        self.cache.set_snapshot(node.id, snapshot)
        BUILDS.labels("published").inc()
        return snapshot

    def forget(self, node_id: str) -> None:
        """Stop building for a node (e.g. gone for good) and drop its own snapshot."""
        self._nodes.pop(node_id, None)
        self._errors.pop(node_id, None)
        self.cache.clear_snapshot(node_id)

    # --- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """JSON-able: config version, overrides, pushes, and each node's versions or build error."""
        nodes = {}
        for node_id in sorted(self._nodes):
            snapshot = self.cache.snapshot(node_id)
            nodes[node_id] = {
                "versions": snapshot.versions() if snapshot else None,
                "error": self._errors.get(node_id),
            }
        return {
            "config_version": self.config.version if self.config else None,
            "overrides": self.overrides.describe(),
            "pushes": self.pushes,
            "pending": self._changed.is_set(),
            "nodes": nodes,
            "default_errors": {k: v for k, v in self._errors.items() if k.startswith("default~")},
        }
