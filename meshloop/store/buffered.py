"""A bounded buffer of rows written to a store table in batches, off the event loop.

For low-volume control-plane records (xDS events, mesh changes): producers call
:meth:`BufferedWriter.add` from the event loop and never wait on ClickHouse; a full
buffer drops its oldest row, and a failed insert drops the batch — both counted in
``meshloop_store_buffered_dropped_total{table}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import polars as pl
from prometheus_client import Counter

from meshloop.errors import StoreError
from meshloop.store.base import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

DROPPED = Counter(
    "meshloop_store_buffered_dropped_total",
    "Control-plane rows not written: buffer full or the store refused them, by table.",
    ["table"],
)
WRITTEN = Counter("meshloop_store_buffered_written_total", "Control-plane rows written, by table.", ["table"])


class BufferedWriter(Generic[T]):
    """Rows of ``table`` buffered in memory and inserted every ``interval_s``."""

    def __init__(
        self,
        store: Store,
        table: str,
        to_frame: Callable[[Iterable[T]], pl.DataFrame],
        capacity: int = 10_000,
        interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.table = table
        self.to_frame = to_frame
        self.interval_s = interval_s
        self._buffer: deque[T] = deque(maxlen=capacity)

    def add(self, row: T) -> None:
        """Keep ``row`` for the next write."""
        if len(self._buffer) == self._buffer.maxlen:
            DROPPED.labels(self.table).inc()
        self._buffer.append(row)

    async def run(self) -> None:
        """Write buffered rows every ``interval_s`` until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                await self.flush()
        finally:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now."""
        rows = list(self._buffer)
        self._buffer.clear()
        if not rows:
            return
        try:
            await asyncio.to_thread(self.store.insert_df, self.table, self.to_frame(rows))
        except StoreError as exc:
            DROPPED.labels(self.table).inc(len(rows))
            log.warning("could not write %d rows to %s: %s", len(rows), self.table, exc)
            return
        WRITTEN.labels(self.table).inc(len(rows))
