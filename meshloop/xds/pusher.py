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

Identical proxies share one build per push (Istio builds per proxy; 1,000 sidecars of one
workload would cost 1,000 identical builds per change): builds are remembered per push
context by :func:`build_key`, the :class:`Proxy` without what translation does not read, and
nodes with equal keys get the same :class:`Snapshot` object. New nodes that connect between
pushes reuse the current push's builds while config and overrides are unchanged. Hooks must
therefore not read ``Proxy.id`` or ``Proxy.workload`` (none does), nor ``Proxy.ip``
other than through the proxy's service instances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import Counter

from meshloop.errors import MeshloopError
from meshloop.mesh import MeshConfig
from meshloop.xds.cache import NodeInfo, SnapshotCache
from meshloop.xds.generate import build_snapshot
from meshloop.xds.overrides import Overrides
from meshloop.xds.proxy import Proxy, Role, proxy_from_node
from meshloop.xds.push import Hooks
from meshloop.xds.push_index import IndexedPushContext
from meshloop.xds.snapshot import Snapshot

__all__ = ["MeshPusher", "build_key"]

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
SHARED = Counter(
    "meshloop_xds_snapshot_builds_shared_total",
    "Node snapshots taken from an identical proxy's build in the same push instead of built.",
)
MAX_NODES = 100_000


def build_key(proxy: Proxy, push: IndexedPushContext) -> Proxy:
    """What ``proxy``'s build depends on: the proxy without ``id`` and ``workload`` (no
    generator reads them) and, when no registry endpoint is at its IP, without ``ip`` (it
    then has no service instances, the only place translation reads the IP: inbound
    listeners and clusters). Equal keys, equal snapshots."""
    ip = proxy.ip if proxy.ip in push.endpoint_addresses else ""
    return replace(proxy, id="", workload="", ip=ip)


@dataclass
class _Builds:
    """One push context and the builds made from it, by :func:`build_key`."""

    push: IndexedPushContext
    done: dict[Proxy, Snapshot | MeshloopError | ValueError] = field(default_factory=dict)

    def build(self, proxy: Proxy) -> Snapshot:
        """``proxy``'s snapshot, built once per key; raises the build's error for every node
        of a failed key (the message names the first node built)."""
        key = build_key(proxy, self.push)
        found = self.done.get(key)
        if found is None:
            try:
                found = build_snapshot(proxy, self.push)
            except (MeshloopError, ValueError) as exc:
                found = exc
            self.done[key] = found
        else:
            SHARED.inc()
        if isinstance(found, Snapshot):
            return found
        raise found.with_traceback(None)  # one error object per key: keep its traceback short


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
        self._builds: _Builds | None = None
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
        builds = self._new_builds(self.config)
        self._publish_defaults(builds)
        for node in list(self._nodes.values()):
            self._push_node(node, builds)
        self.pushes += 1
        self.last_push_at = self._clock()

    def _new_builds(self, config: MeshConfig) -> _Builds:
        self._builds = _Builds(IndexedPushContext(config, self.overrides, self.hooks))
        return self._builds

    def _current_builds(self, config: MeshConfig) -> _Builds:
        """The latest push's builds while its config and overrides are still current."""
        builds = self._builds
        if builds is None or builds.push.config is not config or builds.push.overrides is not self.overrides:
            return self._new_builds(config)
        return builds

    def _publish_defaults(self, builds: _Builds) -> None:
        roles: tuple[Role, ...] = ("sidecar", "gateway")
        for role in roles:
            proxy = Proxy(role=role, id=f"default~{role}", namespace="default")
            try:
                snapshot = builds.build(proxy)
            except (MeshloopError, ValueError) as exc:
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
            self._push_node(node, self._current_builds(self.config))

    def _push_node(self, node: NodeInfo, builds: _Builds) -> Snapshot | None:
        try:
            snapshot = builds.build(proxy_from_node(node))
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
