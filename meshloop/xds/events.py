"""Recording xDS events (connect, disconnect, ACK, NACK) into the store's ``xds_events``.

The ADS server calls :meth:`EventRecorder.record` on the event loop; it never waits on
ClickHouse: events go into a bounded buffer (a full buffer drops the oldest, counted),
and :meth:`EventRecorder.run` inserts them in batches from a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from prometheus_client import Counter

from meshloop.errors import StoreError
from meshloop.store.base import Store
from meshloop.store.schema_control import XDS_EVENTS
from meshloop.xds.status import XdsEvent, events_frame

log = logging.getLogger(__name__)

EVENTS_DROPPED = Counter(
    "meshloop_xds_events_dropped_total", "xDS events not recorded: buffer full or the store refused them."
)
EVENTS_RECORDED = Counter("meshloop_xds_events_recorded_total", "xDS events written to xds_events.")


class EventRecorder:
    """A bounded buffer of events and the loop that writes them (see module docstring)."""

    def __init__(self, store: Store, capacity: int = 10_000, interval_s: float = 1.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self._buffer: deque[XdsEvent] = deque(maxlen=capacity)

    def record(self, event: XdsEvent) -> None:
        """Keep ``event`` for the next write (the ADS server's ``on_event`` hook)."""
        if len(self._buffer) == self._buffer.maxlen:
            EVENTS_DROPPED.inc()
        self._buffer.append(event)

    async def run(self) -> None:
        """Write buffered events every ``interval_s`` until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                await self.flush()
        finally:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now."""
        events = list(self._buffer)
        self._buffer.clear()
        if not events:
            return
        try:
            await asyncio.to_thread(self.store.insert_df, XDS_EVENTS, events_frame(events))
        except StoreError as exc:
            EVENTS_DROPPED.inc(len(events))
            log.warning("could not record %d xDS events: %s", len(events), exc)
            return
        EVENTS_RECORDED.inc(len(events))
