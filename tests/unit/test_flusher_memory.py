"""The flusher lets the store shed memory only when no batch waits behind the one it
committed, and encodes each batch for the store on the decoder thread, not the
inserter's (a fake store records the order of calls and their threads)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from meshloop.accesslog.identity import StreamIdentity
from meshloop.collector.batch import ACCESS_LOGS
from meshloop.collector.flusher import Flusher
from meshloop.collector.intake import Intake
from meshloop.collector.sources import Source
from meshloop.collector.wal import WriteAheadLog
from meshloop.store.base import Store
from tests.unit.test_collector_batch import _payload

STREAM = StreamIdentity(node_id="sidecar~10.0.0.1~a-1.ns~ns.svc.cluster.local", workload="a",
                        namespace="ns", log_name="als")  # fmt: skip


class RecordingStore(Store):
    """Keeps the order of calls; the first insert waits until the next batch is encoded
    (so its encoding cannot be the inserter's work, and that batch is begun)."""

    backend = "fake"

    def __init__(self, flusher_box: list[Flusher]) -> None:
        super().__init__("fake")
        self.calls: list[str] = []
        self._box = flusher_box
        self._first = True

    def _encode(self, table: str, data: pa.Table) -> pa.Table:
        self.calls.append(f"encode {table.rsplit('.', 1)[1]} on {threading.current_thread().name}")
        return data

    def _insert_arrow(self, table: str, data: pa.Table, settings: object) -> None:
        if self._first:
            self._first = False
            deadline = time.monotonic() + 30
            while sum(call.startswith(f"encode {ACCESS_LOGS}") for call in self.calls) < 2:
                assert time.monotonic() < deadline, "the second batch was never encoded"
                time.sleep(0.005)
            assert self._box[0]._pending == 2  # both batches begun, neither committed
        self.calls.append(f"insert {table.rsplit('.', 1)[1]} on {threading.current_thread().name}")

    def release_memory(self) -> None:
        self.calls.append("release")

    def _command(self, sql: str, params: object) -> None: ...

    def _query_arrow(self, sql: str, params: object) -> pa.Table:
        return pa.table({})

    def _close(self) -> None: ...


def test_memory_is_released_when_the_pipeline_goes_idle_not_between_queued_batches(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path / "wal", fsync_interval_s=0)
    payload = _payload("/x")
    intake = Intake(wal, flush_bytes=len(payload) * 3)  # three records to a batch
    box: list[Flusher] = []
    store = RecordingStore(box)
    flusher = Flusher(intake, wal, store, flush_interval_s=0.05, flush_max_bytes=len(payload) * 3,
                      lateness_ns=3600 * 10**9)  # fmt: skip
    box.append(flusher)
    meta = json.dumps(asdict(STREAM)).encode()
    for _ in range(6):  # two full batches
        intake.accept(Source.ENVOY_ALS, meta, payload)
    flusher.start()
    try:
        assert flusher.wait_idle(30)
    finally:
        assert flusher.stop(10)
        wal.close()
    inserts = [call for call in store.calls if call.startswith("insert")]
    assert inserts.count(f"insert {ACCESS_LOGS} on meshloop-inserter") == 2
    encodes = [call for call in store.calls if call.startswith("encode")]
    assert encodes.count(f"encode {ACCESS_LOGS} on meshloop-flusher") == 2
    # batch 1 committed while batch 2 was begun: no release; batch 2 left nothing queued
    assert store.calls[-1] == "release" and store.calls.count("release") == 1
