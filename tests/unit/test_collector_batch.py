"""build_frames: a batch's access logs from many streams in one decode, bad payloads isolated."""

from __future__ import annotations

import json
from dataclasses import asdict

from envoy.service.accesslog.v3 import als_pb2

from meshloop.accesslog.decode import decode_batch
from meshloop.accesslog.identity import StreamIdentity
from meshloop.collector.batch import ACCESS_LOGS, WINDOWS, build_frames
from meshloop.collector.sources import Source
from meshloop.collector.wal_format import WalRecord

NOW = 1_764_000_000_000_000_000


def _payload(path: str, cluster: str = "outbound|9080||reviews.default.svc.cluster.local") -> bytes:
    message = als_pb2.StreamAccessLogsMessage()
    entry = message.http_logs.log_entry.add()
    entry.request.path = path
    entry.common_properties.upstream_cluster = cluster
    entry.common_properties.start_time.FromNanoseconds(NOW)
    entry.response.response_code.value = 200
    return message.SerializeToString()


def _stream(workload: str) -> StreamIdentity:
    return StreamIdentity(node_id=f"sidecar~10.0.0.1~{workload}-1.ns~ns.svc.cluster.local",
                          workload=workload, namespace="ns", log_name="als")


def _record(seq: int, stream: StreamIdentity, payload: bytes) -> WalRecord:
    return WalRecord(seq, int(Source.ENVOY_ALS), NOW, json.dumps(asdict(stream)).encode(), payload)


def test_per_payload_identities_reach_reporter_and_source_columns():
    a, b = _stream("productpage"), _stream("ratings")
    frame = decode_batch([_payload("/a"), _payload("/b"), _payload("/c")], [a, b, a])
    assert frame.select("Path", "ReporterWorkload", "SourceWorkload", "ReporterNodeId").rows() == [
        ("/a", "productpage", "productpage", a.node_id),
        ("/b", "ratings", "ratings", b.node_id),
        ("/c", "productpage", "productpage", a.node_id),
    ]


def test_streams_of_a_batch_decode_together_and_a_bad_payload_is_quarantined():
    a, b = _stream("productpage"), _stream("ratings")
    bad = b"\x12\x05ab"
    records = [_record(1, a, _payload("/a")), _record(2, b, bad), _record(3, b, _payload("/b")),
               _record(4, a, _payload("/c"))]
    out = build_frames(records, "batch-1", lateness_ns=3600 * 10**9)
    frames = out.merged()
    assert sorted(frames[ACCESS_LOGS].select("Path", "ReporterWorkload").rows()) == [
        ("/a", "productpage"), ("/b", "ratings"), ("/c", "productpage"),
    ]
    assert [(record.seq, "message" in error) for record, error in out.quarantined] == [(2, True)]
    assert frames[WINDOWS]["Requests"].sum() == 3
    assert set(frames[ACCESS_LOGS]["BatchId"]) == {"batch-1"}


def test_many_bad_payloads_are_quarantined_in_one_pass(monkeypatch):
    import meshloop.accesslog.native as native

    calls: list[int] = []
    real = native.decode_columns_skipping

    def counting(messages):
        calls.append(len(messages))
        return real(messages)

    monkeypatch.setattr(native, "decode_columns_skipping", counting)
    a = _stream("productpage")
    records = []
    for i in range(50):
        records.append(_record(2 * i, a, _payload(f"/{i}")))
        records.append(_record(2 * i + 1, a, b"\x12\x05ab"))
    out = build_frames(records, "b", lateness_ns=3600 * 10**9)
    assert sorted(out.merged()[ACCESS_LOGS]["Path"]) == sorted(f"/{i}" for i in range(50))
    assert [record.seq for record, _error in out.quarantined] == [2 * i + 1 for i in range(50)]
    assert calls == [100]  # one pass, not one re-decode per bad payload
