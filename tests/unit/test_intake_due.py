"""Intake.due_in: the flusher waits for a full batch or the flush interval, not less."""

from __future__ import annotations

from pathlib import Path

from meshloop.collector.intake import Intake
from meshloop.collector.sources import Source
from meshloop.collector.wal import WriteAheadLog

S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def test_a_batch_is_due_when_full_or_when_its_oldest_record_is_old_enough(tmp_path: Path):
    clock = Clock()
    with WriteAheadLog.open(tmp_path, fsync_interval_s=0.1) as wal:
        intake = Intake(wal, clock=clock)
        assert intake.due_in(1000, 1.0) is None  # nothing waits
        intake.accept(Source.ENVOY_ALS, b"{}", b"x" * 100)
        assert intake.due_in(1000, 1.0) == 1.0  # just arrived
        clock.now += S // 4
        assert intake.due_in(1000, 1.0) == 0.75
        intake.accept(Source.ENVOY_ALS, b"{}", b"x" * 900)
        assert intake.due_in(1000, 1.0) == 0.0  # a full batch waits
        assert len(intake.take(1000)) == 2
        assert intake.due_in(1000, 1.0) is None
        intake.accept(Source.ENVOY_ALS, b"{}", b"x" * 10)
        clock.now += 2 * S
        assert intake.due_in(1000, 1.0) == 0.0  # old enough
        clock.now -= 10 * S  # the clock went back: wait at most one interval
        assert intake.due_in(1000, 1.0) == 1.0


def test_records_waiting_on_disk_are_due_at_once(tmp_path: Path):
    with WriteAheadLog.open(tmp_path, fsync_interval_s=0.1) as wal:
        intake = Intake(wal, memory_limit_bytes=50, clock=Clock())
        intake.accept(Source.ENVOY_ALS, b"{}", b"x" * 100)  # over the memory limit: spilled
        assert intake.due_in(10_000, 1.0) == 0.0
