"""The write-ahead log on real files: replay, commits, torn tails, corruption, the cap,
in-flight batches, durability, a real crash, and a stateful property."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshloop.collector.wal import WalError, WalFull, WalRecord, WriteAheadLog, batch_id
from meshloop.collector.wal_format import HEADER_SIZE, segment_name

META = b'{"node":"n1"}'
NEVER = 3600.0  # an fsync interval the syncer thread never reaches during a test


def payload(i: int, size: int = 100) -> bytes:
    return (f"message-{i}-".encode() * size)[:size]


def record_size(size: int = 100) -> int:
    return HEADER_SIZE + len(META) + size


def fill(wal: WriteAheadLog, count: int, size: int = 100, kind: int = 1) -> list[int]:
    return [wal.append(kind, META, payload(i, size), 1_000 + i) for i in range(count)]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.seg"))


def open_wal(directory: Path, **options: float) -> WriteAheadLog:
    options.setdefault("fsync_interval_s", NEVER)
    return WriteAheadLog.open(directory, **options)  # type: ignore[arg-type]


# -- append, reopen, replay -------------------------------------------------------------
def test_replay_after_reopen_returns_every_record_in_order(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=record_size() * 3) as wal:
        seqs = fill(wal, 10)
        wal.append(7, b"", b"")  # empty meta and payload are legal
    assert seqs == list(range(1, 11))
    assert len(segments(tmp_path)) == 4  # records 1-3, 4-6, 7-9, 10-11 (11 is small)
    with open_wal(tmp_path) as wal:
        records = list(wal.replay())
        recovery = wal.recovery()
    assert records[:10] == [WalRecord(i + 1, 1, 1_000 + i, META, payload(i)) for i in range(10)]
    assert records[10] == WalRecord(11, 7, records[10].arrival_ns, b"", b"")
    assert (recovery.pending_first, recovery.pending_last, recovery.pending_records) == (1, 11, 11)
    assert recovery.in_flight == []


def test_segment_files_are_named_by_their_first_seq(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=record_size() * 2) as wal:
        fill(wal, 5)
    assert [p.name for p in segments(tmp_path)] == [segment_name(1), segment_name(3), segment_name(5)]
    assert segment_name(3) == "wal-00000000000000000003.seg"


def test_read_from_starts_at_the_seq_and_stops_at_the_last_appended_when_called(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=record_size() * 2) as wal:
        fill(wal, 6)
        reader = wal.read_from(3)
        fill(wal, 2)  # appended after the call: not part of this read
        assert [r.seq for r in reader] == [3, 4, 5, 6]
        assert [r.seq for r in wal.read_from(7)] == [7, 8]


def test_read_from_the_middle_of_a_segment_seeks_past_the_records_before_it(tmp_path: Path) -> None:
    # One segment. The flusher reads a spilled backlog back a batch at a time: each read
    # must start at its record, not re-read (and re-check) the segment from byte 0.
    # Proof: damage a record before the start; a read from 0 would stop there.
    with open_wal(tmp_path) as wal:
        fill(wal, 6)
        (segment,) = segments(tmp_path)
        with open(segment, "r+b") as file:
            file.seek(record_size() + HEADER_SIZE + len(META) + 10)  # inside record 2's payload
            file.write(b"\xff")
        assert [r.seq for r in wal.read_from(4)] == [4, 5, 6]
        assert [r.payload for r in wal.read_from(3)] == [payload(i) for i in (2, 3, 4, 5)]
        assert wal.stats().corrupt_records == 0
        assert [r.seq for r in wal.read_from(1)] == [1]  # from the start, the damage is found
        assert wal.stats().corrupt_records == 1


def test_read_from_a_segment_found_at_start_reads_it_from_its_first_record(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 6)
    with open_wal(tmp_path) as wal:  # offsets are known only for this process' appends
        assert [r.seq for r in wal.read_from(4)] == [4, 5, 6]
        fill(wal, 2)
        assert [r.seq for r in wal.read_from(7)] == [7, 8]


def test_append_rejects_out_of_range_kind(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal, pytest.raises(ValueError, match="kind"):
        wal.append(70_000, META, b"x")


def test_close_is_idempotent_and_later_appends_are_refused(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    fill(wal, 1)
    wal.close()
    wal.close()
    with pytest.raises(WalError, match="closed"):
        wal.append(1, META, b"x")


# -- commit -----------------------------------------------------------------------------
def test_commit_deletes_committed_segments_and_survives_reopen(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=record_size() * 2) as wal:
        fill(wal, 7)  # segments 1-2, 3-4, 5-6, 7
        wal.commit(4)
        assert [p.name for p in segments(tmp_path)] == [segment_name(5), segment_name(7)]
        assert [r.seq for r in wal.replay()] == [5, 6, 7]
        wal.commit(5)  # segment 5-6 still holds 6: kept, but 5 is never returned again
        assert [r.seq for r in wal.read_from(1)] == [6, 7]
        stats = wal.stats()
    assert (stats.committed_seq, stats.segments, stats.first_seq, stats.last_seq) == (5, 2, 5, 7)
    assert stats.bytes == 3 * record_size()
    with open_wal(tmp_path) as wal:
        assert [r.seq for r in wal.replay()] == [6, 7]
        assert wal.stats().committed_seq == 5
        assert wal.recovery().pending_first == 6


def test_commit_of_everything_deletes_the_open_segment_too(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=1 << 20) as wal:
        fill(wal, 3)
        wal.commit(3)
        assert segments(tmp_path) == []
        assert wal.stats().bytes == 0
        assert wal.append(1, META, b"after") == 4
        assert [r.seq for r in wal.replay()] == [4]


def test_commits_must_go_forward_and_stay_within_appended(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 3)
        wal.commit(2)
        with pytest.raises(ValueError, match="go forward"):
            wal.commit(1)
        with pytest.raises(ValueError, match="last appended"):
            wal.commit(4)


def test_segments_left_by_a_crash_between_checkpoint_and_delete_are_removed_on_open(tmp_path: Path) -> None:
    aside = tmp_path / "aside"
    aside.mkdir()
    directory = tmp_path / "wal"
    with open_wal(directory, segment_max_bytes=record_size() * 2) as wal:
        fill(wal, 5)
        for path in segments(directory):
            (aside / path.name).write_bytes(path.read_bytes())
        wal.commit(4)
    for path in aside.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    with open_wal(directory) as wal:
        assert [p.name for p in segments(directory)] == [segment_name(5)]
        assert [r.seq for r in wal.replay()] == [5]


def test_an_unreadable_checkpoint_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 2)
        wal.commit(1)
    (tmp_path / "checkpoint").write_text("{not json")
    with pytest.raises(WalError, match="checkpoint.*unreadable WAL checkpoint"):
        open_wal(tmp_path)


def test_seq_continues_after_reopen_even_when_every_segment_was_deleted(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 5)
        wal.commit(5)
    assert segments(tmp_path) == []
    with open_wal(tmp_path) as wal:
        assert wal.append(1, META, b"x") == 6
    with open_wal(tmp_path) as wal:  # 6 is on disk, uncommitted
        assert wal.append(1, META, b"y") == 7
        assert [r.seq for r in wal.replay()] == [6, 7]


# -- torn tails and corruption ----------------------------------------------------------
@pytest.mark.parametrize("damage", ["cut_mid_record", "cut_mid_header", "garbage_appended"])
def test_torn_tail_is_truncated_counted_and_appends_continue(tmp_path: Path, damage: str) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 4)
    (path,) = segments(tmp_path)
    intact = 3 * record_size()
    if damage == "cut_mid_record":
        os.truncate(path, intact + 50)
    elif damage == "cut_mid_header":
        os.truncate(path, intact + 10)
    else:
        os.truncate(path, 4 * record_size())
        with open(path, "ab") as f:
            f.write(b"\x00garbage after the last record" * 7)
    expected_records = 4 if damage == "garbage_appended" else 3
    with open_wal(tmp_path) as wal:
        assert wal.stats().torn_tails_truncated == 1
        assert wal.stats().corrupt_records == 0
        assert path.stat().st_size == expected_records * record_size()
        assert [r.seq for r in wal.replay()] == list(range(1, expected_records + 1))
        new = wal.append(2, META, b"later")
    assert new == expected_records + 1
    with open_wal(tmp_path) as wal:
        assert [r.payload for r in wal.replay()][-1] == b"later"
        assert wal.stats().torn_tails_truncated == 0  # nothing left to repair


def test_the_checksum_is_zlibs_crc32_so_older_segments_stay_readable(tmp_path: Path) -> None:
    # Records are checksummed with zlib-ng; segments written with zlib.crc32 before must
    # verify the same. Build one record by hand with zlib and read it back.
    import struct
    import zlib

    from meshloop.collector.wal_format import MAGIC, VERSION

    meta, body = META, payload(1, 5000)
    tail = struct.pack("<BBHIIQq", VERSION, 0, 1, len(meta), len(body), 1, 1_000)
    crc = zlib.crc32(tail, zlib.crc32(body, zlib.crc32(meta)))
    (tmp_path / segment_name(1)).write_bytes(MAGIC + crc.to_bytes(4, "little") + tail + meta + body)
    with open_wal(tmp_path) as wal:
        assert list(wal.replay()) == [WalRecord(1, 1, 1_000, meta, body)]
        assert wal.stats().corrupt_records == 0


def test_crc_corruption_in_the_middle_is_detected_and_the_rest_stays_usable(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_max_bytes=record_size() * 4) as wal:
        fill(wal, 8)  # segments 1-4 and 5-8
    first = segments(tmp_path)[0]
    with open(first, "r+b") as f:
        f.seek(record_size() + HEADER_SIZE + len(META) + 7)  # inside record 2's payload
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open_wal(tmp_path) as wal:
        stats = wal.stats()
        seqs = [r.seq for r in wal.replay()]
        assert wal.append(1, META, b"x") == 9
    assert stats.corrupt_records == 1
    assert stats.torn_tails_truncated == 0
    assert first.stat().st_size == 4 * record_size()  # evidence kept, not truncated
    assert seqs == [1, 5, 6, 7, 8]


# -- the disk cap -----------------------------------------------------------------------
def test_past_the_cap_append_raises_wal_full_writes_nothing_and_commit_frees_space(tmp_path: Path) -> None:
    cap = record_size() * 5
    with open_wal(tmp_path, max_total_bytes=cap, segment_max_bytes=record_size() * 2) as wal:
        fill(wal, 5)
        sizes = {p.name: p.stat().st_size for p in segments(tmp_path)}
        with pytest.raises(WalFull) as refused:
            wal.append(1, META, payload(99))
        assert {p.name: p.stat().st_size for p in segments(tmp_path)} == sizes
        assert str(tmp_path) in str(refused.value)
        assert f"{cap} of {cap} bytes used" in str(refused.value)
        stats = wal.stats()
        assert (stats.last_seq, stats.refused_full, stats.bytes) == (5, 1, cap)
        wal.commit(2)
        assert wal.append(1, META, payload(5)) == 6
        assert [r.seq for r in wal.replay()] == [3, 4, 5, 6]


def test_a_record_larger_than_the_cap_is_always_refused(tmp_path: Path) -> None:
    with open_wal(tmp_path, max_total_bytes=1000) as wal, pytest.raises(WalFull):
        wal.append(1, META, b"x" * 1000)
    assert segments(tmp_path) == []


def test_default_segment_size_follows_the_cap(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "a", max_total_bytes=100 << 20) as wal:
        assert wal.segment_max_bytes == (100 << 20) // 8
    with WriteAheadLog.open(tmp_path / "b") as wal:
        assert wal.segment_max_bytes == 64 << 20


# -- batches ----------------------------------------------------------------------------
def test_in_flight_batch_is_reported_after_a_crash_with_the_same_id(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 6)
        first_id = wal.begin_batch(1, 2)
        wal.commit(2)
        in_flight_id = wal.begin_batch(3, 4)
        assert wal.begin_batch(3, 4) == in_flight_id  # a retry names the same batch
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", in_flight_id)
    assert (first_id, in_flight_id) == (batch_id(1, 2), "wal-3-4")
    with open_wal(tmp_path) as wal:
        recovery = wal.recovery()
        assert recovery.in_flight == [(3, 4, "wal-3-4")]
        assert (recovery.pending_first, recovery.pending_last, recovery.pending_records) == (5, 6, 2)
        assert wal.begin_batch(3, 4) == "wal-3-4"
        wal.commit(4)
    with open_wal(tmp_path) as wal:
        assert wal.recovery().in_flight == []
        assert [r.seq for r in wal.replay()] == [5, 6]


def test_batches_must_follow_each_other(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 6)
        wal.begin_batch(1, 3)
        for first, last in [(3, 4), (5, 4), (5, 7)]:
            with pytest.raises(ValueError, match="must start after 3"):
                wal.begin_batch(first, last)


def test_commit_inside_an_in_flight_batch_is_refused(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 6)
        wal.begin_batch(1, 4)
        with pytest.raises(ValueError, match="inside in-flight batch wal-1-4"):
            wal.commit(2)
        wal.commit(4)
        assert wal.stats().committed_seq == 4


def test_begin_batch_makes_its_records_durable_first(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        fill(wal, 3)
        assert wal.stats().durable_seq == 0
        wal.begin_batch(1, 2)
        assert wal.stats().durable_seq >= 2


# -- durability -------------------------------------------------------------------------
async def test_fsync_every_append_makes_each_record_durable_before_append_returns(tmp_path: Path) -> None:
    with open_wal(tmp_path, fsync_interval_s=0) as wal:
        seq = wal.append(1, META, b"x")
        assert wal.stats().durable_seq == seq
        await asyncio.wait_for(wal.wait_durable(seq), 1)


async def test_wait_durable_returns_only_after_a_sync(tmp_path: Path) -> None:
    with open_wal(tmp_path, fsync_interval_s=NEVER) as wal:
        seq = fill(wal, 3)[-1]
        waiter = asyncio.create_task(wal.wait_durable(seq))
        await asyncio.sleep(0)  # let the waiter register
        await asyncio.sleep(0)
        assert not waiter.done()
        assert wal.stats().durable_seq < seq
        await asyncio.to_thread(wal.sync)
        await asyncio.wait_for(waiter, 5)
        assert wal.stats().durable_seq == seq


async def test_background_syncer_makes_records_durable_within_the_interval(tmp_path: Path) -> None:
    with open_wal(tmp_path, fsync_interval_s=0.1) as wal:
        seq = fill(wal, 3)[-1]
        await asyncio.wait_for(wal.wait_durable(seq), 5)
        assert wal.stats().durable_seq >= seq


async def test_close_wakes_durability_waiters(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, fsync_interval_s=NEVER)
    seq = fill(wal, 1)[0]
    waiter = asyncio.create_task(wal.wait_durable(seq))
    await asyncio.sleep(0)
    await asyncio.to_thread(wal.close)
    await asyncio.wait_for(waiter, 5)


CRASHER = """
import os, sys
from meshloop.collector.wal import WriteAheadLog
wal = WriteAheadLog.open(sys.argv[1], fsync_interval_s=0, segment_max_bytes=4096)
for i in range(int(sys.argv[2])):
    wal.append(3, b"m", b"p%d" % i)
os._exit(0)  # no close, no flush: the process dies right here
"""


def test_records_appended_with_fsync_survive_a_process_crash(tmp_path: Path) -> None:
    count = 300
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-c", CRASHER, str(tmp_path), str(count)], check=True, cwd=root, timeout=60
    )
    with open_wal(tmp_path) as wal:
        records = list(wal.replay())
    assert [r.payload for r in records] == [b"p%d" % i for i in range(count)]
    assert [r.seq for r in records] == list(range(1, count + 1))


# -- concurrency ------------------------------------------------------------------------
def test_flusher_thread_reads_and_commits_while_appends_continue(tmp_path: Path) -> None:
    total = 2000
    seen: list[int] = []
    with open_wal(tmp_path, segment_max_bytes=record_size(50) * 16, fsync_interval_s=0.01) as wal:
        appended = threading.Event()

        def flusher() -> None:
            next_seq = 1
            while len(seen) < total:
                batch = [r.seq for r in wal.read_from(next_seq)][:100]
                if not batch:
                    if appended.is_set() and not list(wal.read_from(next_seq)):
                        return
                    continue
                wal.begin_batch(batch[0], batch[-1])
                wal.commit(batch[-1])
                seen.extend(batch)
                next_seq = batch[-1] + 1

        thread = threading.Thread(target=flusher)
        thread.start()
        fill(wal, total, size=50)
        appended.set()
        thread.join(30)
        assert not thread.is_alive()
        assert seen == list(range(1, total + 1))
        assert wal.stats().committed_seq == total
    assert segments(tmp_path) == []


# -- a stateful property ----------------------------------------------------------------
class WalMachine(RuleBasedStateMachine):
    """Random appends, batches, commits, reopens and torn tails against a model: the
    WAL never loses an uncommitted record nor returns a committed one."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="wal-prop-"))
        self.cap = 4000
        self.wal = self._open()
        self.model: dict[int, bytes] = {}  # uncommitted seq -> payload
        self.committed = 0
        self.last_seq = 0
        self.in_flight: tuple[int, int] | None = None

    def _open(self) -> WriteAheadLog:
        return WriteAheadLog.open(
            self.directory, max_total_bytes=self.cap, segment_max_bytes=700, fsync_interval_s=NEVER
        )

    @rule(data=st.binary(max_size=300))
    def append(self, data: bytes) -> None:
        used = self.wal.stats().bytes
        try:
            seq = self.wal.append(1, META, data)
        except WalFull:
            assert used + record_size(len(data)) > self.cap
            return
        assert seq > self.last_seq
        self.last_seq = seq
        self.model[seq] = data

    @precondition(lambda self: self.model)
    @rule(fraction=st.floats(0, 1))
    def commit(self, fraction: float) -> None:
        pending = sorted(self.model)
        if self.in_flight is not None:
            seq = self.in_flight[1]
        else:
            seq = pending[int(fraction * (len(pending) - 1))]
        self.wal.commit(seq)
        self.committed, self.in_flight = seq, None
        self.model = {s: p for s, p in self.model.items() if s > seq}

    @precondition(lambda self: self.model)
    @rule(fraction=st.floats(0, 1))
    def begin_batch(self, fraction: float) -> None:
        if self.in_flight is not None:
            return
        pending = sorted(self.model)
        last = pending[int(fraction * (len(pending) - 1))]
        assert self.wal.begin_batch(pending[0], last) == batch_id(pending[0], last)
        self.in_flight = (pending[0], last)

    @rule(torn=st.booleans())
    def reopen(self, torn: bool) -> None:
        self.wal.close()
        files = segments(self.directory)
        if torn and files:
            with open(files[-1], "ab") as f:
                f.write(b"MLW1\x00torn")
        self.wal = self._open()
        expected = [] if self.in_flight is None else [(*self.in_flight, batch_id(*self.in_flight))]
        assert self.wal.recovery().in_flight == expected

    @invariant()
    def replay_matches_the_model(self) -> None:
        records = list(self.wal.replay())
        assert {r.seq: r.payload for r in records} == self.model
        assert [r.seq for r in records] == sorted(self.model)
        stats = self.wal.stats()
        assert stats.committed_seq == self.committed
        assert stats.bytes == sum(p.stat().st_size for p in segments(self.directory))
        assert stats.bytes <= self.cap

    def teardown(self) -> None:
        self.wal.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


WalMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestWalMachine = WalMachine.TestCase
