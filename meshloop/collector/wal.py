"""The collector's write-ahead log: an accepted message is on disk before anything else.

Layout (under the WAL directory, e.g. ``<data dir>/wal``)::

    wal-<first_seq:020d>.seg   segment files of framed records (see wal_format)
    checkpoint                 JSON: committed seq, next seq, in-flight batch ranges

**Appends** (event-loop thread) checksum the record outside the lock, then under it
check the disk cap, assign the next seq and write header + meta + payload with one
``os.pwritev`` (no copy of the payload, no per-byte Python). A failed write is rolled
back with ``ftruncate``. Segments rotate at ``segment_max_bytes``; a segment is never
reopened for appending after a restart (a new one starts), so recovery only ever
reads old segments and truncates their torn tails.

**Durability.** ``fsync_interval_s=0``: every append is fdatasync'ed before it
returns. Otherwise a daemon thread fsyncs the directory (new segments), sealed
segments and the open one at most every ``fsync_interval_s`` (group commit) and then
advances ``durable_seq``; :meth:`WriteAheadLog.wait_durable` lets a unary handler
answer only after that. The syncer works on a ``dup`` of the open fd, so rotation
and deletion never close an fd under it. A power loss can thus lose up to one
interval of appends — never one that ``wait_durable`` confirmed or a batch began.
A failed fsync marks the log broken: appends are refused until a restart re-reads
what is really on disk.

**Commit and exactly-once replay.** The flusher calls :meth:`begin_batch` before an
insert: it makes the batch's records durable, persists the range in the checkpoint
and returns the deterministic id ``wal-<first>-<last>`` (the insert deduplication
token's stem). :meth:`commit` persists "everything ≤ seq is in the store" and then
deletes segments whose records are all committed — including the open one, which
is what keeps the disk cap honest when a segment is large relative to the cap (the
default segment size is also ``min(64 MiB, cap / 8)``). After a crash,
:meth:`recovery` reports the in-flight ranges, to be re-inserted with the same ids,
then the rest. Seqs never repeat: the checkpoint keeps the next seq even when every
segment was deleted, and begin_batch's sync guarantees an id that may have reached
the store always names durable records.

**Recovery** (:meth:`open`) reads every segment fully, CRC included. A torn tail is
truncated and counted; a damaged record followed by intact ones is counted as
corruption, logged, and that segment is read only up to it (the rest of the WAL
stays usable; a segment with nothing intact before its damage is removed). Records
are read, not loaded: one segment file at a time, through a buffered reader.

**Cap.** Past ``max_total_bytes`` (all segment files) an append raises
:class:`WalFull` and writes nothing; space returns as commits delete segments.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from meshloop.collector.wal_format import (
    CHECKPOINT,
    HEADER_SIZE,
    MAX_BLOB,
    MAX_KIND,
    Checkpoint,
    SegmentReader,
    SegmentScan,
    WalRecord,
    crc32,
    encode_header,
    open_segment,
    parse_segment_name,
    read_checkpoint,
    scan_segment,
    segment_name,
    write_checkpoint,
)
from meshloop.errors import MeshloopError

__all__ = ["Recovery", "WalError", "WalFull", "WalRecord", "WalStats", "WriteAheadLog", "batch_id"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOTAL_BYTES = 1 << 30
MAX_SEGMENT_BYTES = 64 << 20
_fdatasync = getattr(os, "fdatasync", os.fsync)
_Waiter = tuple[int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]  # (seq, loop, future)


class WalError(MeshloopError):
    """The write-ahead log cannot do what was asked (I/O failure, bad checkpoint, misuse)."""


class WalFull(WalError):
    """An append was refused: the record does not fit under the disk cap (or the disk is full).

    Nothing was written. The caller answers ``RESOURCE_EXHAUSTED``; space returns as
    the flusher commits batches to the store.
    """

    def __init__(self, directory: Path, cap: int, used: int, needed: int, reason: str = "") -> None:
        self.directory, self.cap, self.used, self.needed = directory, cap, used, needed
        why = reason or f"a {needed}-byte record does not fit"
        super().__init__(
            f"write-ahead log {directory} is full: {used} of {cap} bytes used, {why}; it drains as "
            "batches reach the store (check the store, or raise wal_max_bytes)"
        )


def batch_id(first_seq: int, last_seq: int) -> str:
    """The deterministic id of the batch of records ``first_seq..last_seq``."""
    return f"wal-{first_seq}-{last_seq}"


@dataclass(frozen=True, slots=True)
class WalStats:
    """A cheap snapshot for Prometheus. Seqs are 0 when nothing was ever appended."""

    bytes: int
    max_bytes: int
    segments: int
    first_seq: int | None  # the oldest record still on disk
    last_seq: int  # the newest appended record
    durable_seq: int  # every record <= this is fsynced
    committed_seq: int  # every record <= this reached the store
    torn_tails_truncated: int
    corrupt_records: int
    refused_full: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`WriteAheadLog.open` found: replay ``in_flight`` batches first (same
    ids), then the records ``pending_first..pending_last`` in new batches."""

    in_flight: list[tuple[int, int, str]]  # (first seq, last seq, batch id)
    pending_first: int | None  # first uncommitted seq after the in-flight batches
    pending_last: int
    pending_records: int


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # bytes on disk
    readable_end: int  # end of the intact records (< size after corruption)
    last_seq: int | None = None
    # Byte offset of each record this process appended (index: seq - first_seq), so a
    # read from the middle of the segment seeks to it instead of re-reading (and
    # re-checking) every record before it. None for segments found at start.
    offsets: array[int] | None = field(default_factory=lambda: array("q"))

    def offset_of(self, seq: int) -> int:
        """Where record ``seq`` (or the first record, for a seq before it) begins."""
        index = seq - self.first_seq
        if self.offsets is None or index <= 0 or index >= len(self.offsets):
            return 0
        return self.offsets[index]


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return read_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise WalError(
            f"{path}: unreadable WAL checkpoint ({exc}); restore it, or move the WAL directory "
            "aside to start empty (its uncommitted records are then not replayed)"
        ) from exc


class WriteAheadLog:
    """Segmented, checksummed, capped append-only log of accepted messages.

    ``append`` and ``wait_durable`` run on the event loop; ``begin_batch``, ``commit``,
    ``read_from`` and ``sync`` on other threads. Create with :meth:`open`.
    """

    def __init__(
        self, directory: Path, segment_max_bytes: int, max_total_bytes: int, fsync_interval_s: float
    ):
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self.max_total_bytes = max_total_bytes
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()  # all state below
        self._sync_lock = threading.Lock()  # one sync at a time; owns _retired fds
        self._checkpoint_lock = threading.Lock()  # one checkpoint writer at a time
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        self._segments: list[_Segment] = []  # in seq order; the last may be _active
        self._active: _Segment | None = None
        self._active_fd: int | None = None
        self._retired: list[int] = []  # sealed, not yet fsynced segment fds
        self._dir_dirty = False
        self._total_bytes = 0
        self._next_seq = 1
        self._durable_seq = 0
        self._committed_seq = 0
        self._in_flight: list[tuple[int, int]] = []
        self._waiters: list[_Waiter] = []
        self._failed: str | None = None
        self._closed = False
        self._fds_closed = False
        self._torn = self._corrupt = self._refused = 0
        self._recovery = Recovery([], None, 0, 0)
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # -- opening and recovery ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        segment_max_bytes: int | None = None,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        fsync_interval_s: float = 0.1,
    ) -> WriteAheadLog:
        """Open (or create) the WAL in ``directory``, recovering from any crash.

        ``segment_max_bytes`` defaults to ``min(64 MiB, max_total_bytes // 8)``.
        Raises :class:`WalError` for an unreadable checkpoint.
        """
        if (
            max_total_bytes <= 0
            or fsync_interval_s < 0
            or (segment_max_bytes is not None and segment_max_bytes <= 0)
        ):
            raise ValueError("max_total_bytes and segment_max_bytes must be positive, fsync_interval_s >= 0")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if segment_max_bytes is None:
            segment_max_bytes = min(MAX_SEGMENT_BYTES, max(1, max_total_bytes // 8))
        wal = cls(directory, segment_max_bytes, max_total_bytes, fsync_interval_s)
        try:
            wal._recover()
        except BaseException:
            os.close(wal._dir_fd)
            raise
        if fsync_interval_s > 0:
            wal._syncer = threading.Thread(target=wal._run_syncer, name="meshloop-wal-sync", daemon=True)
            wal._syncer.start()
        return wal

    def _recover(self) -> None:
        cp = _read_checkpoint(self.directory / CHECKPOINT)
        (self.directory / (CHECKPOINT + ".tmp")).unlink(missing_ok=True)
        in_flight = [b for b in cp.in_flight if b[1] > cp.committed_seq]
        boundary = max([cp.committed_seq] + [last for _, last in in_flight])
        next_seq = max([cp.next_seq, cp.committed_seq + 1] + [last + 1 for _, last in in_flight])
        pending_first, pending_count = None, 0
        names = sorted(
            (seq, name)
            for name in os.listdir(self.directory)
            if (seq := parse_segment_name(name)) is not None
        )
        for first_seq, name in names:
            scan = self._recover_segment(self.directory / name, first_seq, cp.committed_seq, boundary)
            for seq in (scan.last_seq, scan.salvage_max_seq):
                if seq is not None:
                    next_seq = max(next_seq, seq + 1)
            if scan.last_seq is not None and scan.last_seq > cp.committed_seq:
                pending_count += scan.records_after
                if pending_first is None:
                    pending_first = scan.first_after
        os.fsync(self._dir_fd)
        self._next_seq = next_seq
        self._durable_seq = next_seq - 1  # every kept segment was fsynced above
        self._committed_seq = cp.committed_seq
        self._in_flight = in_flight
        self._recovery = Recovery(
            [(a, b, batch_id(a, b)) for a, b in in_flight], pending_first, next_seq - 1, pending_count
        )

    def _recover_segment(self, path: Path, first_seq: int, committed: int, boundary: int) -> SegmentScan:
        """Check one segment; truncate a torn tail; delete it if fully committed or
        empty; otherwise fsync it (its data may still be only in the page cache)."""
        scan = scan_segment(path, boundary)
        if scan.torn_tail:
            log.warning("WAL %s: torn tail at byte %d of %d truncated", path, scan.intact_end, scan.size)
            self._torn += 1
            os.truncate(path, scan.intact_end)
        elif scan.damaged:
            log.error(
                "WAL %s: corrupt record at byte %d; the rest of this segment is skipped",
                path,
                scan.intact_end,
            )
            self._corrupt += 1
        if scan.last_seq is None or scan.last_seq <= committed:
            path.unlink()
            return scan
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        size = scan.intact_end if scan.torn_tail else scan.size
        self._segments.append(_Segment(first_seq, path, size, scan.intact_end, scan.last_seq, None))
        self._total_bytes += size
        return scan

    def recovery(self) -> Recovery:
        """The in-flight batches and the pending range found when the WAL was opened."""
        return self._recovery

    # -- appending ----------------------------------------------------------------------
    def append(self, kind: int, meta: bytes, payload: bytes, arrival_ns: int | None = None) -> int:
        """Write one record; return its seq. Raises :class:`WalFull` (nothing written)
        when it does not fit under the cap, :class:`WalError` on an I/O failure."""
        if not 0 <= kind <= MAX_KIND or len(meta) > MAX_BLOB or len(payload) > MAX_BLOB:
            raise ValueError(f"kind must be 0..{MAX_KIND} and meta/payload at most {MAX_BLOB} bytes")
        body_crc = crc32(payload, crc32(meta))
        size = HEADER_SIZE + len(meta) + len(payload)
        if arrival_ns is None:
            arrival_ns = time.time_ns()
        with self._lock:
            self._check_usable_locked()
            if self._total_bytes + size > self.max_total_bytes:
                self._refused += 1
                raise WalFull(self.directory, self.max_total_bytes, self._total_bytes, size)
            segment = self._active
            if segment is None or (segment.size > 0 and segment.size + size > self.segment_max_bytes):
                segment = self._rotate_locked()
            seq = self._next_seq
            header = encode_header(seq, kind, arrival_ns, len(meta), len(payload), body_crc)
            self._write_locked([header, meta, payload], segment.size, size)
            if segment.offsets is not None:
                segment.offsets.append(segment.size)
            segment.size = segment.readable_end = segment.size + size
            segment.last_seq = seq
            self._total_bytes += size
            self._next_seq = seq + 1
            if self.fsync_interval_s == 0:
                self._sync_inline_locked(seq)
        return seq

    def _check_usable_locked(self) -> None:
        if self._failed is not None or self._closed:
            raise WalError(f"write-ahead log {self.directory} is {self._failed or 'closed'}")

    def _rotate_locked(self) -> _Segment:
        path = self.directory / segment_name(self._next_seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise WalError(f"write-ahead log {self.directory}: cannot create {path.name}: {exc}") from exc
        if self._active_fd is not None:
            if self.fsync_interval_s == 0:
                os.close(self._active_fd)  # every append already synced it
            else:
                self._retired.append(self._active_fd)  # the syncer fsyncs and closes it
        self._active_fd = fd
        self._active = _Segment(self._next_seq, path, 0, 0)
        self._segments.append(self._active)
        self._dir_dirty = True
        return self._active

    def _write_locked(self, parts: list[bytes], offset: int, size: int) -> None:
        fd = self._active_fd
        assert fd is not None
        try:
            written = os.pwritev(fd, parts, offset)
            while written < size:  # rare: a short write; finish it
                written += os.pwrite(fd, b"".join(parts)[written:], offset + written)
        except OSError as exc:
            try:
                os.ftruncate(fd, offset)
            except OSError as undo:
                self._failed = f"broken (could not undo a failed write: {undo})"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._refused += 1
                reason = f"the disk is full ({exc.strerror})"
                raise WalFull(self.directory, self.max_total_bytes, self._total_bytes, size, reason) from exc
            raise WalError(f"write-ahead log {self.directory}: write failed: {exc}") from exc

    # -- durability ---------------------------------------------------------------------
    def _sync_inline_locked(self, seq: int) -> None:
        try:
            if self._dir_dirty:
                os.fsync(self._dir_fd)
                self._dir_dirty = False
            assert self._active_fd is not None
            _fdatasync(self._active_fd)
        except OSError as exc:
            self._failed = f"broken (fsync failed: {exc})"
            raise WalError(f"write-ahead log {self.directory}: fsync failed: {exc}") from exc
        self._durable_seq = seq

    def sync(self) -> int:
        """Fsync everything appended so far (directory, sealed and open segments);
        return the durable seq. Called by the syncer thread; callable from any thread."""
        with self._sync_lock:
            with self._lock:
                target = self._next_seq - 1
                if self._fds_closed or (
                    target <= self._durable_seq and not self._retired and not self._dir_dirty
                ):
                    return self._durable_seq
                fds, self._retired = self._retired, []
                if self._active_fd is not None:
                    fds.append(os.dup(self._active_fd))
                dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                if dir_dirty:
                    os.fsync(self._dir_fd)
                for fd in fds:
                    _fdatasync(fd)
            except OSError as exc:
                self._fail(f"broken (fsync failed: {exc})")
                raise WalError(f"write-ahead log {self.directory}: fsync failed: {exc}") from exc
            finally:
                for fd in fds:
                    os.close(fd)
            with self._lock:
                self._durable_seq = max(self._durable_seq, target)
                ready = [w for w in self._waiters if w[0] <= target]
                self._waiters = [w for w in self._waiters if w[0] > target]
        _wake(ready, None)
        return target

    def _fail(self, reason: str) -> None:
        log.error("write-ahead log %s is %s; intake is refused until restart", self.directory, reason)
        with self._lock:
            self._failed = reason
            waiters, self._waiters = self._waiters, []
        _wake(waiters, WalError(f"write-ahead log {self.directory} is {reason}"))

    def _run_syncer(self) -> None:
        while not self._stop.wait(self.fsync_interval_s):
            try:
                self.sync()
            except WalError:
                return  # logged and recorded by _fail; appends are refused from now on

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` is fsynced (immediately with ``fsync_interval_s=0``)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._failed is not None:
                raise WalError(f"write-ahead log {self.directory} is {self._failed}")
            if seq <= self._durable_seq:
                return
            if seq >= self._next_seq:
                raise ValueError(f"seq {seq} was never appended (last is {self._next_seq - 1})")
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((seq, loop, future))
        await future

    # -- batches and commits ------------------------------------------------------------
    def begin_batch(self, first_seq: int, last_seq: int) -> str:
        """Persist that records ``first_seq..last_seq`` are about to be inserted; return
        the batch id. The records are made durable first. Repeating an in-flight range
        returns its id unchanged; otherwise ranges must follow each other in order."""
        with self._lock:
            self._check_usable_locked()
            if (first_seq, last_seq) in self._in_flight:
                return batch_id(first_seq, last_seq)
            previous = self._in_flight[-1][1] if self._in_flight else self._committed_seq
            if not previous < first_seq <= last_seq < self._next_seq:
                raise ValueError(
                    f"batch {first_seq}..{last_seq} must start after {previous} "
                    f"and end by the last appended seq {self._next_seq - 1}"
                )
            needs_sync = last_seq > self._durable_seq
        if needs_sync:
            self.sync()
        with self._checkpoint_lock:
            with self._lock:
                self._in_flight.append((first_seq, last_seq))
                cp = self._checkpoint_locked()
            self._write_checkpoint(cp)
        return batch_id(first_seq, last_seq)

    def commit(self, seq: int) -> None:
        """Record that every record ``<= seq`` reached the store; delete the segments
        holding only such records (the open one too, which a new append replaces)."""
        with self._checkpoint_lock:
            with self._lock:
                self._check_usable_locked()
                inside = [b for b in self._in_flight if b[0] <= seq < b[1]]
                if inside:
                    raise ValueError(f"commit {seq} falls inside in-flight batch {batch_id(*inside[0])}")
                if seq < self._committed_seq or seq >= self._next_seq:
                    raise ValueError(
                        f"commit {seq}: commits go forward (last {self._committed_seq}) "
                        f"and stop at the last appended seq ({self._next_seq - 1})"
                    )
                if seq == self._committed_seq:
                    return
                self._committed_seq = seq
                self._in_flight = [b for b in self._in_flight if b[1] > seq]
                cp = self._checkpoint_locked()
            self._write_checkpoint(cp)
        with self._lock:
            done = [s for s in self._segments if s.last_seq is not None and s.last_seq <= seq]
            for segment in done:
                self._segments.remove(segment)
                self._total_bytes -= segment.size
                if segment is self._active:
                    assert self._active_fd is not None
                    os.close(self._active_fd)
                    self._active, self._active_fd = None, None
        for segment in done:
            segment.path.unlink(missing_ok=True)
        if done:
            os.fsync(self._dir_fd)

    def _write_checkpoint(self, cp: Checkpoint) -> None:
        try:
            write_checkpoint(self.directory, self._dir_fd, cp)
        except OSError as exc:
            raise WalError(f"write-ahead log {self.directory}: cannot write the checkpoint: {exc}") from exc

    def _checkpoint_locked(self) -> Checkpoint:
        return Checkpoint(self._committed_seq, self._next_seq, tuple(self._in_flight))

    # -- reading ------------------------------------------------------------------------
    def read_from(self, first_seq: int) -> Iterator[WalRecord]:
        """Records with seq ``>= first_seq`` (never committed ones), in order, up to the
        last appended when called. Reads one segment at a time."""
        with self._lock:
            after = max(first_seq - 1, self._committed_seq)
            until = self._next_seq - 1
            parts = [
                (s, s.offset_of(after + 1), s.readable_end)
                for s in self._segments
                if s.last_seq is not None and s.last_seq > after
            ]
        return self._iter_segments(parts, after, until)

    def replay(self) -> Iterator[WalRecord]:
        """Every uncommitted record, in order."""
        return self.read_from(0)

    def _iter_segments(
        self, parts: list[tuple[_Segment, int, int]], after: int, until: int
    ) -> Iterator[WalRecord]:
        for segment, start, end in parts:
            try:
                file = open_segment(segment.path)
            except FileNotFoundError:
                continue  # committed and deleted meanwhile
            with file:
                reader = SegmentReader(file, end, start)
                for record in reader:
                    if record.seq > until:
                        return
                    if record.seq > after:
                        yield record
            if reader.damaged:
                with self._lock:
                    if reader.offset >= segment.readable_end:
                        continue  # another reader found it first
                    segment.readable_end = reader.offset
                    self._corrupt += 1
                log.error(
                    "WAL %s: corrupt record at byte %d; the rest is skipped", segment.path, reader.offset
                )

    # -- state and shutdown -------------------------------------------------------------
    def stats(self) -> WalStats:
        """Sizes, seqs and problem counters (cheap: no I/O)."""
        with self._lock:
            first = next((s.first_seq for s in self._segments if s.last_seq is not None), None)
            return WalStats(
                self._total_bytes,
                self.max_total_bytes,
                len(self._segments),
                first,
                self._next_seq - 1,
                self._durable_seq,
                self._committed_seq,
                self._torn,
                self._corrupt,
                self._refused,
            )

    def close(self) -> None:
        """Fsync and close; later appends raise :class:`WalError`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            if self._failed is None:
                self.sync()
        finally:
            with self._lock:
                fds, self._retired = self._retired, []
                if self._active_fd is not None:
                    fds.append(self._active_fd)
                    self._active, self._active_fd = None, None
                for fd in [*fds, self._dir_fd]:
                    os.close(fd)
                self._fds_closed = True

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _wake(waiters: list[_Waiter], error: BaseException | None) -> None:
    for _, loop, future in waiters:
        try:
            loop.call_soon_threadsafe(_resolve, future, error)
        except RuntimeError:
            pass  # that event loop is closed: nobody is waiting any more


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
