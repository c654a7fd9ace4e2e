"""The snapshot cache: which snapshot each proxy should have, and watches on it.

The narrow waist between translation and the ADS server, as go-control-plane's
``SnapshotCache`` (https://github.com/envoyproxy/go-control-plane/blob/main/pkg/cache/v3/simple.go):
the cache never touches gRPC, the server never builds resources. A node gets its own
snapshot (:meth:`SnapshotCache.set_snapshot`) or else the first default group whose
``match`` accepts it (:meth:`SnapshotCache.set_default`). Publishing checks consistency
first and keeps the previous snapshot when the new one is inconsistent.

Debouncing is the caller's job. Use the cache from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshloop.xds.snapshot import InconsistentSnapshot, Snapshot

__all__ = ["NodeInfo", "SnapshotCache", "Watch"]


@dataclass(frozen=True)
class NodeInfo:
    """The identity a proxy sends on its first request: id, cluster, metadata (JSON values),
    Envoy's version (``user_agent_build_version``, e.g. ``1.40.0``)."""

    id: str
    cluster: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    envoy_version: str = ""

    @classmethod
    def from_proto(cls, node: base_pb2.Node) -> NodeInfo:
        build = node.user_agent_build_version.version
        version = f"{build.major_number}.{build.minor_number}.{build.patch}" if build.major_number else ""
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        return cls(node.id, node.cluster, metadata, version or node.user_agent_version)


NodeMatch = Callable[[NodeInfo], bool]


class Watch:
    """A stream's interest in one node's snapshot. :meth:`next` returns whenever the node's
    effective snapshot is replaced (changes coalesce: only the latest is returned)."""

    def __init__(self, cache: SnapshotCache, node: NodeInfo) -> None:
        self.node = node
        self._cache = cache
        self._changed = asyncio.Event()

    def current(self) -> Snapshot | None:
        return self._cache.snapshot_for(self.node)

    def notify(self) -> None:
        self._changed.set()

    async def next(self) -> Snapshot | None:
        """Wait for a change, then return the node's snapshot now."""
        await self._changed.wait()
        self._changed.clear()
        return self.current()

    def close(self) -> None:
        self._cache._forget(self)


class SnapshotCache:
    """Per-node snapshots, default snapshots by node match, and watches.

    ``external_clusters`` are clusters the bootstrap defines statically (e.g.
    ``meshloop_collector``); routes may refer to them without a CDS resource.
    """

    def __init__(self, external_clusters: Collection[str] = ()) -> None:
        self.external_clusters = frozenset(external_clusters)
        self._snapshots: dict[str, Snapshot] = {}
        self._defaults: dict[str, tuple[NodeMatch, Snapshot]] = {}
        self._watches: dict[str, set[Watch]] = {}

    def _check(self, snapshot: Snapshot, where: str) -> None:
        problems = snapshot.consistent(self.external_clusters)
        if problems:
            raise InconsistentSnapshot(problems, where)

    def set_snapshot(self, node_id: str, snapshot: Snapshot) -> None:
        """Publish ``snapshot`` for one node and wake its streams. Raises
        :class:`~meshloop.xds.snapshot.InconsistentSnapshot` (keeping the previous one) when
        a reference dangles."""
        self._check(snapshot, f"snapshot for node {node_id!r}")
        self._snapshots[node_id] = snapshot
        for watch in self._watches.get(node_id, ()):
            watch.notify()

    def clear_snapshot(self, node_id: str) -> None:
        """Forget a node's own snapshot (it falls back to a default, if any matches)."""
        if self._snapshots.pop(node_id, None) is not None:
            for watch in self._watches.get(node_id, ()):
                watch.notify()

    def set_default(self, group: str, match: NodeMatch, snapshot: Snapshot) -> None:
        """Publish a default snapshot for nodes without their own for which ``match`` is true
        (e.g. ``lambda n: n.metadata.get("NAMESPACE") == "shop"``). Groups are tried in the
        order first set; setting a group again replaces its match and snapshot in place."""
        self._check(snapshot, f"default snapshot {group!r}")
        self._defaults[group] = (match, snapshot)
        for node_id, watches in self._watches.items():
            if node_id not in self._snapshots:
                for watch in watches:
                    watch.notify()

    def snapshot(self, node_id: str) -> Snapshot | None:
        """The node's own snapshot (no default)."""
        return self._snapshots.get(node_id)

    def snapshot_for(self, node: NodeInfo) -> Snapshot | None:
        """The node's own snapshot, else the first matching default, else ``None``."""
        own = self._snapshots.get(node.id)
        if own is not None:
            return own
        for match, snapshot in self._defaults.values():
            if match(node):
                return snapshot
        return None

    def watch(self, node: NodeInfo) -> Watch:
        """Start watching ``node``'s snapshot; :meth:`Watch.close` it when the stream ends."""
        watch = Watch(self, node)
        self._watches.setdefault(node.id, set()).add(watch)
        return watch

    async def wait_for_version(self, node: NodeInfo, type_url: str, known: str | None) -> Snapshot:
        """Wait until the node's version of ``type_url`` differs from ``known``; return that snapshot."""
        watch = self.watch(node)
        try:
            snapshot = watch.current()
            while snapshot is None or snapshot.version(type_url) == known:
                snapshot = await watch.next()
            return snapshot
        finally:
            watch.close()

    def _forget(self, watch: Watch) -> None:
        watches = self._watches.get(watch.node.id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.node.id]
