"""The C access-log reader: its build, its errors, and the lifetime of its buffers."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.service.accesslog.v3 import als_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from meshloop.accesslog import native, tracecontext
from meshloop.accesslog.decode import DecodeError, decode_batch
from meshloop.accesslog.identity import StreamIdentity

STREAM = StreamIdentity(node_id="n", workload="w", namespace="ns")


def _payload(path: str = "/x", entries: int = 1) -> bytes:
    message = als_pb2.StreamAccessLogsMessage()
    for _ in range(entries):
        entry = message.http_logs.log_entry.add()
        entry.request.path = path
        entry.common_properties.upstream_cluster = "outbound|80||svc"
    return message.SerializeToString()


def test_columns_match_the_c_enums_and_are_flat_arrow_arrays():
    columns = native.decode_columns([_payload(entries=3), _payload("/y")])
    assert list(columns) == [name for name, _t, _n in native.NUMERIC] + [name for name, _n in native.STRINGS]
    assert columns["Path"].to_pylist() == ["/x", "/x", "/x", "/y"]
    assert columns["payload"].to_pylist() == [0, 0, 0, 1]
    assert columns["TraceId"].to_pylist() == [""] * 4  # no trace-context header logged


def test_build_compiles_the_source_into_the_target(tmp_path: Path):
    target = native.build(tmp_path / "als.so")
    assert target.is_file() and target.stat().st_size > 0
    assert not list(tmp_path.glob(".als_decode-*"))  # the temporary file was renamed


def test_build_without_a_compiler_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(native.NativeDecoderUnavailable, match="cannot run the C compiler"):
        native.build(tmp_path / "als.so")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x12\x05ab", "truncated"),
        (b"\x12\x0b" + b"\xff" * 11, "varint"),
        (b"\x17", "wire type"),
        (b"\x02", "field number"),
        (b"\x1c", "group"),
    ],
)
def test_malformed_payloads_name_payload_and_reason(payload: bytes, reason: str):
    with pytest.raises(native.NativeDecodeError, match=reason) as info:
        native.decode_columns([_payload(), payload])
    assert info.value.payload == 1


def test_invalid_utf8_in_a_string_field_is_refused_like_protobuf():
    entry = al.HTTPAccessLogEntry()
    entry.request.path = "/ok"
    raw = bytearray(als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
    ).SerializeToString())
    raw[raw.index(b"/ok") + 1] = 0xFF
    with pytest.raises(native.NativeDecodeError, match="UTF-8"):
        native.decode_columns([bytes(raw)])
    with pytest.raises(DecodeError) as info:
        decode_batch([bytes(raw)], STREAM)
    assert info.value.message_index == 0


def test_a_1mb_path_and_hostile_bytes_are_kept_exactly():
    hostile = "/'\";\n\r\x00" + "é" * 10 + "p" * 1_000_000
    frame = decode_batch([_payload(hostile)], STREAM)
    assert frame["Path"].to_list() == [hostile]


def test_frames_outlive_the_decoder_buffers():
    frame = decode_batch([_payload(f"/p{i}") for i in range(200)], STREAM)
    gc.collect()
    junk = [bytes(1000) for _ in range(10_000)]  # reuse freed memory, if any was freed early
    assert frame["Path"].to_list() == [f"/p{i}" for i in range(200)]
    assert frame["DestinationService"].unique().to_list() == ["svc"]
    del junk


def test_empty_batches_and_payloads_without_entries():
    assert decode_batch([], STREAM).height == 0
    assert decode_batch([b"", als_pb2.StreamAccessLogsMessage().SerializeToString()], STREAM).height == 0


_pieces = st.lists(
    st.sampled_from(["00", "-", "0" * 16, "0" * 32, "ab" * 8, "f" * 32, "1" * 15, "A" * 16, "\n", "x", "0"]),
    max_size=8,
).map("".join)
_header_values = st.one_of(_pieces, st.text(alphabet="0123456789abcdefA-\n", max_size=60))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(tracecontext.HEADERS), _header_values, max_size=4))
def test_trace_and_span_ids_follow_the_reference_rules(headers: dict[str, str]):
    entry = al.HTTPAccessLogEntry()
    entry.request.request_headers.update(headers)
    payload = als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
    ).SerializeToString()
    frame = decode_batch([payload], STREAM)
    assert (frame["TraceId"][0], frame["SpanId"][0]) == tracecontext.trace_context(headers)


def test_build_command_without_a_compiler_exits_2(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(native, "LIBRARY", tmp_path / "als.so")
    monkeypatch.setattr(native.build, "__defaults__", (tmp_path / "als.so", ("-O3",)))
    assert native.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot run the C compiler") and "install one" in err
    assert err.count("\n") == 1


def test_skipping_rolls_back_a_bad_payloads_rows_and_names_it():
    good, bad = _payload("/g", entries=2), _payload("/b", entries=3)[:-3]  # cut inside its last entry
    columns, errors = native.decode_columns_skipping([good, bad, good])
    assert columns["Path"].to_pylist() == ["/g"] * 4
    assert columns["payload"].to_pylist() == [0, 0, 2, 2]
    assert [(e.payload, e.reason) for e in errors] == [(1, native.ERRORS[1])]
    with pytest.raises(native.NativeDecodeError):
        native.decode_columns([good, bad, good])
