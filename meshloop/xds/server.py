"""The ADS server: ``envoy.service.discovery.v3.AggregatedDiscoveryService`` over grpc.aio.

Both variants of the xDS protocol
(https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

* ``StreamAggregatedResources`` — state of the world: each response holds every
  subscribed resource of its type; LDS/CDS subscriptions with no names (or ``*``) mean all.
* ``DeltaAggregatedResources`` — incremental: only new/changed resources (each with its
  own version, a content hash) and ``removed_resources``.

Per stream: the node arrives on the first request only (``set_node_on_first_message_only``)
and is kept; nonces grow strictly; every type runs the ACK/NACK machine of
:mod:`meshloop.xds.ack`. A type is pushed only when the node's snapshot version of it
differs from what the stream last sent or the client reported holding on reconnect
(SotW ``version_info``, delta ``initial_resource_versions``) — never with a version the
client NACKed. When several types change at once they go out CDS → EDS → LDS → RDS
(make-before-break). Resources are the snapshot's ``Any`` messages, serialized once.

The server never builds resources: it reads them from a :class:`~meshloop.xds.cache.SnapshotCache`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message

from meshloop.errors import MeshloopError
from meshloop.xds.ack import (
    AckState,
    Kind,
    RequestView,
    apply_ack,
    apply_nack,
    classify,
    on_request,
    record_send,
    should_push,
)
from meshloop.xds.cache import NodeInfo, SnapshotCache, Watch
from meshloop.xds.resources import PUSH_ORDER, WILDCARD_TYPES
from meshloop.xds.snapshot import Snapshot, delta_diff
from meshloop.xds.status import XdsStatus

__all__ = ["AdsServicer", "start_xds_server"]

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 64  # requests + change signals waiting for one stream; readers wait when full
_CHANGED = object()
_END = object()


def _ordered(types: Collection[str]) -> list[str]:
    """``types`` in push order: CDS, EDS, LDS, RDS, SDS, then others by name."""
    known = [t for t in PUSH_ORDER if t in types]
    return known + sorted(t for t in types if t not in PUSH_ORDER)


def _error(request: Any) -> str | None:
    if not request.HasField("error_detail"):
        return None
    return request.error_detail.message or f"code {request.error_detail.code}"


class _Stream:
    """What both protocol variants share: node, watch, nonces, the event loop of one stream."""

    def __init__(self, cache: SnapshotCache, status: XdsStatus, context: grpc.aio.ServicerContext) -> None:
        self.cache = cache
        self.status = status
        self.context = context
        self.node: NodeInfo | None = None
        self.watch: Watch | None = None
        self._nonce = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_LIMIT)

    def next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    @property
    def node_id(self) -> str:
        assert self.node is not None
        return self.node.id

    def snapshot(self) -> Snapshot | None:
        assert self.watch is not None
        return self.watch.current()

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                await self._queue.put(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.debug("ADS stream read ended: %s", exc)
        finally:
            await self._queue.put(_END)

    async def _watch(self, watch: Watch) -> None:
        while True:
            await watch.next()
            await self._queue.put(_CHANGED)

    async def run(self, requests: AsyncIterator[Any]) -> None:
        """Serve the stream until the client closes it (or the RPC is cancelled)."""
        tasks = [asyncio.create_task(self._read(requests))]
        try:
            while (item := await self._queue.get()) is not _END:
                if item is _CHANGED:
                    snapshot = self.snapshot()
                    if snapshot is not None:
                        await self.on_snapshot(snapshot)
                    continue
                if self.node is None:
                    if not item.HasField("node") or not item.node.id:
                        await self.context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "the first request on a stream must carry node.id",
                        )
                    self.node = NodeInfo.from_proto(item.node)
                    self.watch = self.cache.watch(self.node)
                    self.status.connected(self.node.id, self.node.cluster, self.node.envoy_version)
                    tasks.append(asyncio.create_task(self._watch(self.watch)))
                await self.on_request(item)
        finally:
            for task in tasks:
                task.cancel()
            if self.watch is not None:
                self.watch.close()
                self.status.disconnected(self.node_id)

    async def send(self, response: Message) -> None:
        await self.context.write(response)

    async def on_request(self, request: Any) -> None:
        raise NotImplementedError

    async def on_snapshot(self, snapshot: Snapshot) -> None:
        raise NotImplementedError


class _SotwStream(_Stream):
    """State of the world: one :class:`AckState` per type."""

    def __init__(self, cache: SnapshotCache, status: XdsStatus, context: grpc.aio.ServicerContext) -> None:
        super().__init__(cache, status, context)
        self.states: dict[str, AckState] = {}

    async def on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url, names = request.type_url, frozenset(request.resource_names)
        if type_url in WILDCARD_TYPES and (not names or "*" in names):
            names_or_all: frozenset[str] | None = None
        else:
            names_or_all = names
        view = RequestView(request.response_nonce, request.version_info, _error(request), names_or_all)
        snapshot = self.snapshot()
        current = snapshot.version(type_url) if snapshot is not None else None
        outcome = on_request(self.states.get(type_url), view, current)
        self.states[type_url] = state = outcome.state
        if outcome.kind is Kind.ACK and state.acked_version is not None:
            self.status.acked(self.node_id, type_url, state.acked_version)
        elif outcome.kind is Kind.NACK:
            self.status.nacked(self.node_id, type_url, outcome.rejected or "", view.error or "")
        elif outcome.kind is Kind.REQUEST and view.version_info and view.version_info == current:
            self.status.resumed(self.node_id, type_url, current)
        if outcome.respond and snapshot is not None:
            await self._push(type_url, snapshot)

    async def on_snapshot(self, snapshot: Snapshot) -> None:
        for type_url in _ordered(self.states):
            if should_push(self.states[type_url], snapshot.version(type_url)):
                await self._push(type_url, snapshot)

    async def _push(self, type_url: str, snapshot: Snapshot) -> None:
        typed, state = snapshot.get(type_url), self.states[type_url]
        nonce = self.next_nonce()
        response = discovery_pb2.DiscoveryResponse(
            version_info=typed.version,
            type_url=type_url,
            nonce=nonce,
            resources=[r.packed for r in typed.select(state.names)],
        )
        self.states[type_url] = record_send(state, typed.version, nonce)
        self.status.sent(self.node_id, type_url, typed.version)
        await self.send(response)


@dataclass
class _DeltaType:
    """A delta subscription: ACK state, names (``None`` = wildcard), what the client holds."""

    ack: AckState = field(default_factory=AckState)
    names: set[str] | None = None
    known: dict[str, str] = field(default_factory=dict)

    def subscribe(self, added: Collection[str], removed: Collection[str]) -> bool:
        """Apply (un)subscriptions; True when a name (or the wildcard) was added."""
        grew = False
        for name in removed:
            if name == "*":
                self.names = set()
            elif self.names is not None:
                self.names.discard(name)
            self.known.pop(name, None)
        for name in added:
            if name == "*":
                grew, self.names = grew or self.names is not None, None
            elif self.names is not None and name not in self.names:
                grew = True
                self.names.add(name)
        return grew


class _DeltaStream(_Stream):
    """Incremental xDS: per type a :class:`_DeltaType`."""

    def __init__(self, cache: SnapshotCache, status: XdsStatus, context: grpc.aio.ServicerContext) -> None:
        super().__init__(cache, status, context)
        self.types: dict[str, _DeltaType] = {}

    async def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        entry = self.types.get(type_url)
        first = entry is None
        if entry is None:
            wildcard = type_url in WILDCARD_TYPES and not request.resource_names_subscribe
            entry = self.types[type_url] = _DeltaType(
                names=None if wildcard else set(), known=dict(request.initial_resource_versions)
            )
        error = _error(request)
        kind = classify(None if first else entry.ack, request.response_nonce, error is not None)
        sent = entry.ack.sent_version
        if kind is Kind.ACK and sent is not None:
            entry.ack = apply_ack(entry.ack)
            self.status.acked(self.node_id, type_url, sent)
        elif kind is Kind.NACK:
            entry.ack, rejected = apply_nack(entry.ack, request.response_nonce, error or "")
            self.status.nacked(self.node_id, type_url, rejected, error or "")
        grew = entry.subscribe(request.resource_names_subscribe, request.resource_names_unsubscribe)
        snapshot = self.snapshot()
        if (first or grew) and snapshot is not None:
            await self._push(type_url, snapshot, always=first)

    async def on_snapshot(self, snapshot: Snapshot) -> None:
        for type_url in _ordered(self.types):
            await self._push(type_url, snapshot, always=False)

    async def _push(self, type_url: str, snapshot: Snapshot, always: bool) -> None:
        """Send what changed; with ``always`` (a new subscription) send even nothing, so the
        client learns the version and finishes initialising."""
        entry, typed = self.types[type_url], snapshot.get(type_url)
        if typed.version in entry.ack.rejected and not always:
            return  # the client rejected exactly this content on this stream
        changed, removed = delta_diff(entry.known, typed, entry.names)
        if not (changed or removed or always):
            return
        nonce = self.next_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=typed.version,
            type_url=type_url,
            nonce=nonce,
            resources=[r.delta_resource() for r in changed],
            removed_resources=removed,
        )
        entry.known.update((r.name, r.version) for r in changed)
        for name in removed:
            del entry.known[name]
        entry.ack = record_send(entry.ack, typed.version, nonce)
        self.status.sent(self.node_id, type_url, typed.version)
        await self.send(response)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS for grpc.aio: serves snapshots from ``cache``, reports to ``status``."""

    def __init__(self, cache: SnapshotCache, status: XdsStatus) -> None:
        self.cache = cache
        self.status = status

    async def StreamAggregatedResources(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await _SotwStream(self.cache, self.status, context).run(request_iterator)

    async def DeltaAggregatedResources(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await _DeltaStream(self.cache, self.status, context).run(request_iterator)


async def start_xds_server(
    cache: SnapshotCache,
    host: str = "127.0.0.1",
    port: int = 15010,
    *,
    status: XdsStatus | None = None,
    max_streams: int = 10_000,
) -> tuple[grpc.aio.Server, int]:
    """Start a plaintext ADS server on ``host:port`` (0 = a free port); returns (server, port).

    Pass ``status`` to read proxy status and receive events; stop with ``await server.stop(grace)``.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_concurrent_streams", max_streams),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ]
    )
    servicer = AdsServicer(cache, status if status is not None else XdsStatus())
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise MeshloopError(f"cannot listen on {address} for xDS: {exc}; choose another --xds-port") from None
    await server.start()
    return server, bound
