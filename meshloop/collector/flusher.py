"""The flusher: WAL batches → decoded frames → the store, exactly once, in order.

Two threads in a pipeline, so that decoding batch N+1 overlaps inserting batch N
(ClickHouse, polars and the C access-log reader release the GIL):

- the *decoder* takes records from intake once a batch is due (``flush_max_bytes``
  waiting, or the oldest record ``flush_interval`` old: :meth:`Intake.due_in`),
  records the batch's range in the WAL
  (``begin_batch``: that fixes its id; ranges begin in seq order), decodes
  (:func:`~meshloop.collector.batch.build_frames`), encodes each table's rows for the
  store (:meth:`~meshloop.store.base.Store.prepare_insert`) and hands them on through
  a queue of one;
- the *inserter* inserts each table's frame with the insert deduplication token
  ``<batch id>.<table>``, then commits (``commit``) — batches in the order they began.

A crash anywhere replays every begun range under the same id, and ClickHouse drops the
blocks it has already seen — so replay never duplicates rows. A failed insert is
retried with backoff (the store may be down for a while); intake keeps filling the WAL
meanwhile, and the decoder waits for the inserter (at most one decoded batch waits).
"""

from __future__ import annotations

import ctypes
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from meshloop.accesslog.windows import empty_partials
from meshloop.collector import metrics as m
from meshloop.collector.batch import WINDOWS, BatchFrames, build_frames
from meshloop.collector.intake import Intake
from meshloop.collector.sources import Source
from meshloop.collector.wal import WalRecord, WriteAheadLog
from meshloop.errors import StoreError
from meshloop.store.base import PreparedInsert, Store

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 10.0

# ClickHouse error codes that mean "try again later", not "this data is wrong"
# (https://github.com/ClickHouse/ClickHouse/blob/master/src/Common/ErrorCodes.cpp).
TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY (replica read-only for a while)
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)


def is_transient(error: StoreError) -> bool:
    """True for outages and overload (retry), False for data ClickHouse rejects."""
    return error.code is None or error.code in TRANSIENT_CODES


WindowSink = Callable[[pl.DataFrame, int, int], None]
"""Receives (window partials, now_ns, late entries) after each committed batch."""

_HANDOFF_POLL_S = 0.2


@dataclass
class _Decoded:
    """A batch ready for the store: inserts prepared on the decoder thread."""

    last: int  # the batch's last WAL seq
    batch_id: str
    frames: BatchFrames  # quarantined records, sources and late entries
    inserts: dict[str, PreparedInsert]  # by table
    windows: pl.DataFrame | None  # the merged window partials, for the live feed
    decode_s: float  # decode and encode


def _name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in ``top -H`` and ``/proc/<pid>/task/*/comm``
    (Linux only; best effort, at most 15 bytes)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass


class Flusher:
    """Moves accepted telemetry from the WAL into the store (see module docstring)."""

    def __init__(
        self,
        intake: Intake,
        wal: WriteAheadLog,
        store: Store,
        *,
        flush_interval_s: float = 1.0,
        flush_max_bytes: int = 64 << 20,
        lateness_ns: int = 5_000_000_000,
        quarantine_dir: Path | None = None,
        on_windows: WindowSink | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.intake = intake
        self.wal = wal
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.flush_max_bytes = flush_max_bytes
        self.lateness_ns = lateness_ns
        self.quarantine_dir = quarantine_dir
        self.on_windows = on_windows
        self._clock = clock
        self._stopping = threading.Event()
        self._aborted = threading.Event()  # the inserter gave up (stopping during an outage)
        self._idle = threading.Event()
        self._handoff: queue.Queue[_Decoded | None] = queue.Queue(maxsize=1)
        self._pending_lock = threading.Lock()
        self._pending = 0  # batches begun and not yet committed
        self._drained = False  # the decoder's last look found intake empty
        self._threads: list[threading.Thread] = []
        self.batches_committed = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the decoder and inserter threads (after :meth:`replay_in_flight`)."""
        self._threads = [
            threading.Thread(target=self._run_decoder, name="meshloop-flusher", daemon=True),
            threading.Thread(target=self._run_inserter, name="meshloop-inserter", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> bool:
        """Flush what is queued, then stop; True if it finished within ``timeout``.

        Anything not flushed stays in the WAL and is replayed at the next start.
        """
        self._stopping.set()
        self.intake.wakeup.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def replay_in_flight(self, batches: list[tuple[int, int, str]]) -> None:
        """Re-run batches that were in flight at a crash, with their original ids."""
        for first, last, batch_id in batches:
            records = [r for r in self.wal.read_from(first) if r.seq <= last] if first <= last else []
            log.info("replaying in-flight batch %s (%d records)", batch_id, len(records))
            self._flush(records, batch_id)

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything taken so far is committed (tests, shutdown)."""
        return self._idle.wait(timeout)

    # -- the pipeline -------------------------------------------------------------------
    def _run_decoder(self) -> None:
        _name_os_thread("ml-decoder")
        try:
            while not self._aborted.is_set():
                stopping = self._stopping.is_set()
                due = self.intake.due_in(self.flush_max_bytes, self.flush_interval_s)
                if due and not stopping:  # records wait, but neither a full batch nor for long
                    self._idle.clear()
                    self.intake.wakeup.wait(due)
                    self.intake.wakeup.clear()
                    continue
                records = self.intake.take(self.flush_max_bytes)
                if not records:
                    with self._pending_lock:
                        self._drained = True
                        if self._pending == 0:
                            self._idle.set()
                    if stopping:
                        return
                    self.intake.wakeup.wait(self.flush_interval_s)
                    self.intake.wakeup.clear()
                    continue
                with self._pending_lock:
                    self._drained = False
                    self._pending += 1
                    self._idle.clear()
                decoded = self._decode(records, None)
                del records  # the payloads are not needed while the batch waits its turn
                if not self._hand_off(decoded):
                    return
                del decoded
        finally:
            self._hand_off(None)

    def _hand_off(self, item: _Decoded | None) -> bool:
        """Queue ``item`` for the inserter; False if the inserter has given up."""
        while not self._aborted.is_set():
            try:
                self._handoff.put(item, timeout=_HANDOFF_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run_inserter(self) -> None:
        _name_os_thread("ml-inserter")
        while True:
            item = self._handoff.get()
            if item is None:
                return
            if not self._store(item):
                self._aborted.set()  # stopping during a store outage: the batch stays in flight
                return
            with self._pending_lock:
                self._pending -= 1
                idle = self._pending == 0
                if idle and self._drained:
                    self._idle.set()
            if idle:  # nothing queued behind this batch: let the store shed its memory
                self.store.release_memory()

    def _flush(self, records: list[WalRecord], batch_id: str | None) -> bool:
        """Decode and store one batch in the calling thread (replay at start)."""
        if not records:
            return True
        return self._store(self._decode(records, batch_id))

    def _decode(self, records: list[WalRecord], batch_id: str | None) -> _Decoded:
        first, last = records[0].seq, records[-1].seq
        if batch_id is None:
            batch_id = self.wal.begin_batch(first, last)
        decode_started = time.perf_counter()
        frames = build_frames(records, batch_id, self.lateness_ns)
        for source, seconds in frames.decode_seconds.items():
            m.DECODE_SECONDS.labels(source.label).observe(seconds)
        merged = frames.merged()
        # Encoding here, not on the inserter, keeps the pipeline's slower stage short:
        # the store's insert of the previous batch overlaps it.
        inserts = {table: self.store.prepare_insert(table, frame) for table, frame in merged.items()}
        decode_s = time.perf_counter() - decode_started
        return _Decoded(last, batch_id, frames, inserts, merged.get(WINDOWS), decode_s)

    def _store(self, batch: _Decoded) -> bool:
        started = time.perf_counter() - batch.decode_s  # FLUSH_SECONDS: decode + insert + commit
        frames = batch.frames
        for record, error in frames.quarantined:
            self._quarantine(record, error)
        for table, prepared in batch.inserts.items():
            if not self._insert_with_retry(prepared, f"{batch.batch_id}.{table}"):
                return False
            m.ENTRIES_STORED.labels(frames.sources[table].label, table).inc(prepared.rows)
        self.wal.commit(batch.last)
        self.batches_committed += 1
        m.FLUSH_SECONDS.observe(time.perf_counter() - started)
        if self.on_windows is not None and (batch.windows is not None or frames.late_entries):
            windows = batch.windows if batch.windows is not None else empty_partials()
            self.on_windows(windows, self._clock(), frames.late_entries)
        return True

    def _insert_with_retry(self, prepared: PreparedInsert, token: str) -> bool:
        delay = RETRY_INITIAL_S
        while True:
            try:
                self.store.insert_prepared(prepared, dedup_token=token)
                return True
            except StoreError as exc:
                m.FLUSH_FAILURES.inc()
                log.warning(
                    "insert into %s failed (%s); retrying in %.1fs (data is safe in the WAL)",
                    prepared.table,
                    exc,
                    delay,
                )
            if self._stopping.wait(delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)

    def _quarantine(self, record: WalRecord, error: str) -> None:
        source = Source(record.kind)
        m.RECORDS_QUARANTINED.labels(source.label).inc()
        log.error(
            "undecodable %s message (WAL seq %d, stream %s): %s",
            source.label,
            record.seq,
            record.meta[:200],
            error,
        )
        if self.quarantine_dir is not None:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            (self.quarantine_dir / f"{record.seq:020d}.{source.label}.pb").write_bytes(record.payload)
