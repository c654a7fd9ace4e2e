"""Intake: the one door into the collector — WAL first, then a bounded hand-off queue.

:meth:`Intake.accept` appends a message to the write-ahead log (that is the moment it
counts as accepted) and queues the record for the flusher. The queue holds at most
``memory_limit_bytes`` of payloads (64 MiB: one batch of the default flush size);
past that, records stay only in the WAL and the flusher reads them back from disk —
still in the page cache, usually — so a backlog or a long store outage costs disk,
bounded by the WAL's cap, not memory. A full WAL refuses the message: the caller answers gRPC
``RESOURCE_EXHAUSTED`` and the refusal is counted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from meshloop.collector.metrics import BYTES_RECEIVED, MESSAGES_RECEIVED
from meshloop.collector.sources import Source
from meshloop.collector.wal import WalFull, WalRecord, WriteAheadLog


class Refused(Exception):
    """Intake cannot take this message; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Intake:
    """Append to the WAL, queue for the flusher. ``accept`` runs on the event loop."""

    def __init__(
        self,
        wal: WriteAheadLog,
        *,
        memory_limit_bytes: int = 64 << 20,
        flush_bytes: int = 64 << 20,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.wal = wal
        self.memory_limit_bytes = memory_limit_bytes
        self.flush_bytes = flush_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[WalRecord] = deque()
        self._queued_bytes = 0
        self._spilled_from: int | None = None  # first seq only on disk, if any
        self._spilled_to = 0
        self.wakeup = threading.Event()
        # Labelled metric children, looked up once per source instead of per message.
        self._counters = {
            source: (MESSAGES_RECEIVED.labels(source.label), BYTES_RECEIVED.labels(source.label))
            for source in Source
        }

    def accept(self, source: Source, meta: bytes, payload: bytes) -> int:
        """Append ``payload`` durably-enough (per the WAL's fsync policy); return its seq."""
        arrival = self._clock()
        try:
            seq = self.wal.append(int(source), meta, payload, arrival)
        except WalFull as exc:
            raise Refused("wal_full", str(exc)) from None
        messages, received = self._counters[source]
        messages.inc()
        received.inc(len(payload))
        record = WalRecord(seq, int(source), arrival, meta, payload)
        with self._lock:
            if self._spilled_from is None and self._queued_bytes + len(payload) <= self.memory_limit_bytes:
                self._queue.append(record)
                self._queued_bytes += len(payload)
            else:
                if self._spilled_from is None:
                    self._spilled_from = seq
                self._spilled_to = seq
            full = self._queued_bytes >= self.flush_bytes or self._spilled_from is not None
        if full:
            self.wakeup.set()
        return seq

    def resume_from(self, first_seq: int, last_seq: int) -> None:
        """Queue WAL records ``first_seq..last_seq`` (uncommitted at start) for reading
        back from disk, before anything accepted from now on."""
        with self._lock:
            self._spilled_from, self._spilled_to = first_seq, last_seq
        self.wakeup.set()

    def due_in(self, batch_bytes: int, interval_s: float) -> float | None:
        """Seconds until a batch is due — 0.0 once ``batch_bytes`` wait (or records wait
        on disk), or the oldest waiting record is ``interval_s`` old; None if none waits.

        The flusher waits for this rather than taking whatever has arrived the moment it
        is free: at a steady rate below its capacity, that would cut the stream into
        many small batches, and every small batch is a ClickHouse part to write and merge.
        """
        with self._lock:
            if self._spilled_from is not None or self._queued_bytes >= batch_bytes:
                return 0.0
            if not self._queue:
                return None
            oldest = self._queue[0].arrival_ns
        age_s = (self._clock() - oldest) / 1e9
        return min(interval_s, max(0.0, interval_s - age_s))

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` is fsynced (per the WAL's policy)."""
        await self.wal.wait_durable(seq)

    def take(self, max_bytes: int) -> list[WalRecord]:
        """Up to ``max_bytes`` of records in seq order (at least one if any is waiting).

        Memory holds the oldest records: once a record spills to disk every later one
        does too, until the flusher has read the spill back from the WAL.
        """
        records: list[WalRecord] = []
        taken = 0
        with self._lock:
            while self._queue and (not records or taken + len(self._queue[0].payload) <= max_bytes):
                record = self._queue.popleft()
                records.append(record)
                taken += len(record.payload)
            self._queued_bytes -= taken
            if records or self._spilled_from is None:
                return records
            start, end = self._spilled_from, self._spilled_to
        for record in self.wal.read_from(start):
            if record.seq > end or (records and taken + len(record.payload) > max_bytes):
                break
            records.append(record)
            taken += len(record.payload)
        with self._lock:
            last = records[-1].seq if records else end
            if last >= self._spilled_to:
                self._spilled_from = None
            else:
                self._spilled_from = last + 1
        return records

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting in memory for the flusher."""
        return self._queued_bytes
