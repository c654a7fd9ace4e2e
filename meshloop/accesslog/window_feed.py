"""The live window feed: finalized 1 s windows published in process to subscribers.

:class:`WindowAggregator` is the thin shell around the pure
:func:`meshloop.accesslog.windows.step_windows`: it keeps the open windows, turns
``feed``/``advance`` calls into steps, counts late requests, and hands each step's
final windows to every subscriber. It reads no clock (callers pass ``now_ns``) and
never blocks: a subscriber's queue is bounded and, when it is full, the oldest item is
dropped and counted. The controllers' live telemetry is a subscription::

    sub = aggregator.subscribe(max_queue=16)
    async for final in sub:          # FinalWindows, in watermark order
        decide(..., final.frame, now=final.final_before_ns)

Call ``feed``/``advance``/``subscribe``/``close`` from the event loop the subscribers
iterate on (asyncio queues are not thread-safe).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import polars as pl
from prometheus_client import Counter

from meshloop.accesslog.windows import OpenWindows, empty_partials, step_windows

__all__ = ["AggregatorStats", "FinalWindows", "WindowAggregator", "WindowSubscription"]

WINDOW_LATE_ENTRIES = Counter(
    "meshloop_window_late_entries_total",
    "Access-log entries left out of their 1 s window, by stage: 'arrival' (later than "
    "the lateness when they reached the collector; stored raw only) or 'finalized' "
    "(their window had already been published).",
    ["stage"],
)
WINDOW_SUBSCRIBER_DROPS = Counter(
    "meshloop_window_subscriber_drops_total",
    "Finalized-window items dropped because a subscriber's queue was full.",
)
WINDOW_FINALIZED_ROWS = Counter(
    "meshloop_window_finalized_rows_total",
    "Per-edge window rows finalized and published to the live feed.",
)

_CLOSED: Final = object()


@dataclass(frozen=True)
class FinalWindows:
    """One publication: every window starting before ``final_before_ns`` is now final;
    ``frame`` holds the rows (partials schema) of those that became final in this step.

    Published whenever the watermark moves, even with an empty ``frame``: a subscriber
    can tell "no traffic in these seconds" from "no news yet".
    """

    final_before_ns: int
    frame: pl.DataFrame


@dataclass(frozen=True)
class AggregatorStats:
    """Counts since the aggregator was made (the Prometheus counters sum all of them)."""

    late_at_arrival: int
    late_after_final: int
    finalized_rows: int
    subscriber_drops: int
    open_rows: int
    final_before_ns: int


class WindowSubscription:
    """An async iterator of :class:`FinalWindows`, in order, with a bounded queue.

    When the queue is full the oldest item is dropped (the freshest telemetry matters
    most to a controller) and counted in ``dropped``. ``close()`` ends the iteration,
    also for a task waiting in it; so does closing the aggregator.
    """

    def __init__(self, aggregator: WindowAggregator, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._aggregator = aggregator
        self._queue: asyncio.Queue[object] = asyncio.Queue(max_queue)
        self._closed = False
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, item: FinalWindows) -> None:
        """Queue ``item`` without waiting, dropping (and counting) the oldest if full."""
        if self._closed:
            return
        if self._evict_one_if_full():
            self.dropped += 1
            WINDOW_SUBSCRIBER_DROPS.inc()
        self._queue.put_nowait(item)

    def close(self) -> None:
        """Unsubscribe and end the iteration; items still queued are discarded."""
        if self._closed:
            return
        self._closed = True
        self._aggregator.unsubscribe(self)
        self._evict_one_if_full()
        self._queue.put_nowait(_CLOSED)

    def _evict_one_if_full(self) -> bool:
        if not self._queue.full():
            return False
        self._queue.get_nowait()
        return True

    def __aiter__(self) -> WindowSubscription:
        return self

    async def __anext__(self) -> FinalWindows:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            raise StopAsyncIteration
        assert isinstance(item, FinalWindows)
        return item

    async def __aenter__(self) -> WindowSubscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WindowAggregator:
    """Open 1 s windows in memory; final ones returned and published to subscribers.

    ``lateness_ns`` must be the value given to
    :func:`~meshloop.accesslog.windows.window_partials`, and ``now_ns`` the clock its
    arrivals were read from, for the two lateness rules to agree.
    """

    def __init__(self, lateness_ns: int) -> None:
        if lateness_ns < 0:
            raise ValueError(f"lateness_ns must be >= 0, got {lateness_ns}")
        self.lateness_ns = lateness_ns
        self._state = OpenWindows()
        self._subscribers: list[WindowSubscription] = []
        self._late_at_arrival = 0
        self._late_after_final = 0
        self._finalized_rows = 0
        self._dropped_by_closed = 0

    def feed(self, partials: pl.DataFrame, now_ns: int, *, late_entries: int = 0) -> pl.DataFrame:
        """Merge a batch's partials, finalize what ``now_ns`` closes, publish; return the
        newly final rows. ``late_entries`` is the batch's late count from
        ``window_partials`` (counted here so all lateness is in one metric)."""
        if late_entries:
            self._late_at_arrival += late_entries
            WINDOW_LATE_ENTRIES.labels("arrival").inc(late_entries)
        return self._step(partials, now_ns)

    def advance(self, now_ns: int) -> pl.DataFrame:
        """Finalize on a clock tick without new data; return the newly final rows."""
        return self._step(empty_partials(), now_ns)

    def subscribe(self, max_queue: int = 16) -> WindowSubscription:
        """A new subscription to the windows finalized from now on."""
        subscription = WindowSubscription(self, max_queue)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: WindowSubscription) -> None:
        """Stop publishing to ``subscription`` (its ``close()`` calls this)."""
        if subscription in self._subscribers:
            self._dropped_by_closed += subscription.dropped
            self._subscribers.remove(subscription)

    def close(self) -> None:
        """End every subscription (shutdown); the aggregator can still be fed."""
        for subscription in list(self._subscribers):
            subscription.close()

    @property
    def stats(self) -> AggregatorStats:
        return AggregatorStats(
            late_at_arrival=self._late_at_arrival,
            late_after_final=self._late_after_final,
            finalized_rows=self._finalized_rows,
            subscriber_drops=self._dropped_by_closed + sum(s.dropped for s in self._subscribers),
            open_rows=self._state.rows,
            final_before_ns=self._state.final_before_ns,
        )

    def _step(self, partials: pl.DataFrame, now_ns: int) -> pl.DataFrame:
        before = self._state.final_before_ns
        step = step_windows(self._state, partials, now_ns, self.lateness_ns)
        self._state = step.state
        if step.late_requests:
            self._late_after_final += step.late_requests
            WINDOW_LATE_ENTRIES.labels("finalized").inc(step.late_requests)
        if step.final.height:
            self._finalized_rows += step.final.height
            WINDOW_FINALIZED_ROWS.inc(step.final.height)
        if step.state.final_before_ns > before:
            item = FinalWindows(step.state.final_before_ns, step.final)
            for subscription in list(self._subscribers):
                subscription.offer(item)
        return step.final
