"""What each proxy was sent and what it accepted: status, events, Prometheus metrics.

:class:`XdsStatus` is fed by the ADS server (sent, ACK, NACK, connect, disconnect) and
answers :meth:`XdsStatus.status` with JSON-able dicts for the HTTP API and
``meshloop proxy-status``; :func:`proxy_status_table` renders them like
``istioctl proxy-status`` (https://istio.io/latest/docs/reference/commands/istioctl/#istioctl-proxy-status).
Each ACK/NACK/CONNECT/DISCONNECT is also an :class:`XdsEvent` handed to ``on_event``
(the runtime stores them in the ``xds_events`` table; :func:`events_frame` makes a frame).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from prometheus_client import Counter, Gauge, Histogram

from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_name

__all__ = [
    "EVENT_SCHEMA",
    "XdsEvent",
    "XdsStatus",
    "events_frame",
    "proxy_status_table",
    "sync_state",
]

log = logging.getLogger(__name__)

PUSHES = Counter("meshloop_xds_pushes_total", "xDS responses sent to proxies, by type.", ["type"])
NACKS = Counter("meshloop_xds_nacks_total", "xDS responses proxies rejected (NACK), by type.", ["type"])
CONNECTED = Gauge("meshloop_xds_connected_proxies", "Proxies (node ids) with at least one ADS stream.")
PUSH_TO_ACK = Histogram(
    "meshloop_xds_push_to_ack_seconds",
    "Time from sending an xDS response to the proxy's ACK, by type.",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENT_HOOK_FAILURES = Counter(
    "meshloop_xds_event_hook_failures_total", "xDS events the on_event hook raised on (event dropped)."
)

EventKind = Literal["ACK", "NACK", "CONNECT", "DISCONNECT"]
SyncState = Literal["SYNCED", "NOT SENT", "STALE (Never Acknowledged)", "NACKed"]
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "time": pl.Datetime("us", "UTC"),
    "node_id": pl.String(),
    "type_url": pl.String(),
    "version": pl.String(),
    "kind": pl.String(),
    "message": pl.String(),
}
_TABLE_TYPES = (CLUSTER, LISTENER, ENDPOINT, ROUTE)


@dataclass(frozen=True)
class XdsEvent:
    """One thing that happened on an ADS stream. ``time`` is Unix seconds; ``type_url`` and
    ``version`` are empty for CONNECT/DISCONNECT; ``message`` is Envoy's NACK text."""

    time: float
    node_id: str
    type_url: str
    version: str
    kind: EventKind
    message: str = ""


@dataclass
class _TypeStatus:
    sent_version: str | None = None
    sent_at: float | None = None
    sent_mono: float | None = None
    acked_version: str | None = None
    acked_at: float | None = None
    nack_version: str | None = None
    nack_message: str | None = None
    nack_at: float | None = None


@dataclass
class _ProxyStatus:
    cluster: str = ""
    envoy_version: str = ""
    connected_since: float | None = None
    disconnected_at: float | None = None
    streams: int = 0
    types: dict[str, _TypeStatus] = field(default_factory=dict)


def sync_state(entry: dict[str, Any] | None) -> SyncState:
    """istioctl's column value for one type: NOT SENT, SYNCED, NACKed or STALE (Never Acknowledged)."""
    if entry is None or entry.get("sent_version") is None:
        return "NOT SENT"
    if entry.get("acked_version") == entry["sent_version"]:
        return "SYNCED"
    if entry.get("nack") and entry["nack"]["version"] == entry["sent_version"]:
        return "NACKed"
    return "STALE (Never Acknowledged)"


class XdsStatus:
    """Per proxy and type: sent/acked versions and times, the last NACK, streams; metrics and
    events. ``clock`` gives Unix seconds, ``monotonic`` measures push→ACK."""

    def __init__(
        self,
        on_event: Callable[[XdsEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_event = on_event
        self._clock = clock
        self._monotonic = monotonic
        self._proxies: dict[str, _ProxyStatus] = {}

    def _emit(
        self, node_id: str, kind: EventKind, type_url: str = "", version: str = "", msg: str = ""
    ) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(XdsEvent(self._clock(), node_id, type_url, version, kind, msg))
        except Exception:  # a broken hook must not break the stream; counted, logged
            EVENT_HOOK_FAILURES.inc()
            log.exception("xds on_event hook failed")

    def _type(self, node_id: str, type_url: str) -> _TypeStatus:
        return self._proxies.setdefault(node_id, _ProxyStatus()).types.setdefault(type_url, _TypeStatus())

    def connected(self, node_id: str, cluster: str = "", envoy_version: str = "") -> None:
        proxy = self._proxies.setdefault(node_id, _ProxyStatus())
        proxy.cluster, proxy.envoy_version = cluster, envoy_version
        if proxy.streams == 0:
            proxy.connected_since = self._clock()
        proxy.streams += 1
        CONNECTED.set(sum(1 for p in self._proxies.values() if p.streams > 0))
        self._emit(node_id, "CONNECT")

    def disconnected(self, node_id: str) -> None:
        proxy = self._proxies.get(node_id)
        if proxy is None:
            return
        proxy.streams = max(0, proxy.streams - 1)
        if proxy.streams == 0:
            proxy.connected_since, proxy.disconnected_at = None, self._clock()
        CONNECTED.set(sum(1 for p in self._proxies.values() if p.streams > 0))
        self._emit(node_id, "DISCONNECT")

    def prune(self, gone_for_s: float) -> list[str]:
        """Forget proxies with no stream for at least ``gone_for_s`` seconds (pods that
        went away); return their node ids. Keeps status bounded under churn."""
        cutoff = self._clock() - gone_for_s
        gone = [
            node_id
            for node_id, proxy in self._proxies.items()
            if proxy.streams == 0 and proxy.disconnected_at is not None and proxy.disconnected_at <= cutoff
        ]
        for node_id in gone:
            del self._proxies[node_id]
        return gone

    def sent(self, node_id: str, type_url: str, version: str) -> None:
        entry = self._type(node_id, type_url)
        entry.sent_version, entry.sent_at, entry.sent_mono = version, self._clock(), self._monotonic()
        PUSHES.labels(short_name(type_url).lower()).inc()

    def acked(self, node_id: str, type_url: str, version: str) -> None:
        entry = self._type(node_id, type_url)
        entry.acked_version, entry.acked_at = version, self._clock()
        if entry.sent_mono is not None and entry.sent_version == version:
            PUSH_TO_ACK.labels(short_name(type_url).lower()).observe(self._monotonic() - entry.sent_mono)
            entry.sent_mono = None
        self._emit(node_id, "ACK", type_url, version)

    def resumed(self, node_id: str, type_url: str, version: str) -> None:
        """A reconnecting proxy already holds the current ``version``: sent and acked, no push."""
        entry = self._type(node_id, type_url)
        entry.sent_version, entry.sent_at, entry.sent_mono = version, self._clock(), None
        self.acked(node_id, type_url, version)

    def nacked(self, node_id: str, type_url: str, version: str, message: str) -> None:
        entry = self._type(node_id, type_url)
        entry.nack_version, entry.nack_message, entry.nack_at = version, message, self._clock()
        entry.sent_mono = None
        NACKS.labels(short_name(type_url).lower()).inc()
        log.warning("node %s rejected %s version %s: %s", node_id, short_name(type_url), version, message)
        self._emit(node_id, "NACK", type_url, version, message)

    def status(self) -> list[dict[str, Any]]:
        """One JSON-able dict per proxy, sorted by node id (types keyed by LDS/RDS/CDS/EDS/SDS)."""
        rows = []
        for node_id in sorted(self._proxies):
            proxy = self._proxies[node_id]
            types = {}
            for type_url, entry in sorted(self._proxies[node_id].types.items()):
                nack = None
                if entry.nack_version is not None or entry.nack_message is not None:
                    nack = {"version": entry.nack_version, "message": entry.nack_message, "at": entry.nack_at}
                item: dict[str, Any] = {
                    "type_url": type_url,
                    "sent_version": entry.sent_version,
                    "sent_at": entry.sent_at,
                    "acked_version": entry.acked_version,
                    "acked_at": entry.acked_at,
                    "nack": nack,
                }
                item["state"] = sync_state(item)
                types[short_name(type_url)] = item
            rows.append(
                {
                    "node_id": node_id,
                    "cluster": proxy.cluster,
                    "envoy_version": proxy.envoy_version,
                    "connected_since": proxy.connected_since,
                    "streams": proxy.streams,
                    "types": types,
                }
            )
        return rows


def proxy_status_table(status: Iterable[dict[str, Any]]) -> str:
    """``istioctl proxy-status``-like text: NAME, CLUSTER, CDS, LDS, EDS, RDS, VERSION."""
    header = ["NAME", "CLUSTER", *(short_name(t) for t in _TABLE_TYPES), "VERSION"]
    rows = [header]
    for proxy in status:
        states = [sync_state(proxy["types"].get(short_name(t))) for t in _TABLE_TYPES]
        rows.append([proxy["node_id"], proxy["cluster"], *states, proxy.get("envoy_version") or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def events_frame(events: Iterable[XdsEvent]) -> pl.DataFrame:
    """Events as a polars frame of :data:`EVENT_SCHEMA` (``time`` as UTC microseconds)."""
    items = list(events)
    return pl.DataFrame(
        {
            "time": [int(e.time * 1_000_000) for e in items],
            "node_id": [e.node_id for e in items],
            "type_url": [e.type_url for e in items],
            "version": [e.version for e in items],
            "kind": [e.kind for e in items],
            "message": [e.message for e in items],
        },
        schema={**EVENT_SCHEMA, "time": pl.Int64()},
    ).with_columns(pl.col("time").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
