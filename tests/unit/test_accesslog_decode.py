"""decode_batch (C reader + polars) against decode_reference (protobuf + Python)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.service.accesslog.v3 import als_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from meshloop.accesslog import codes
from meshloop.accesslog.decode import DecodeError, decode_batch
from meshloop.accesslog.identity import StreamIdentity
from meshloop.accesslog.reference import decode_reference
from meshloop.accesslog.schema import check_frame

STREAM = StreamIdentity(
    "sidecar~10.1.2.3~productpage-v1-abc.default~default.svc.cluster.local",
    "productpage.default",
    "productpage-v1",
    "default",
    "v1",
    "mesh-als",
)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _addr(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def full_http() -> al.HTTPAccessLogEntry:
    e = al.HTTPAccessLogEntry(protocol_version=al.HTTPAccessLogEntry.HTTP2)
    c = e.common_properties
    c.start_time.FromNanoseconds(1_764_000_000_123_456_789)
    c.downstream_remote_address.CopyFrom(_addr("10.1.0.7", 51234))
    c.downstream_local_address.CopyFrom(_addr("10.1.2.3", 9080))
    c.upstream_remote_address.CopyFrom(_addr("fd00::9", 9080))
    c.upstream_local_address.CopyFrom(_addr("10.1.2.3", 40000))
    for i, name in enumerate(
        [
            "time_to_last_rx_byte",
            "time_to_first_upstream_tx_byte",
            "time_to_last_upstream_tx_byte",
            "time_to_first_upstream_rx_byte",
            "time_to_last_upstream_rx_byte",
            "time_to_first_downstream_tx_byte",
            "time_to_last_downstream_tx_byte",
        ]
    ):
        getattr(c, name).FromNanoseconds(1000 * (i + 1))
    c.duration.FromNanoseconds(9_000)
    c.upstream_cluster = "outbound|9080|v2|reviews.default.svc.cluster.local"
    c.route_name = "reviews"
    c.upstream_transport_failure_reason = "none"
    c.connection_termination_details = "done"
    c.upstream_request_attempt_count = 2
    c.stream_id = "stream-1"
    c.access_log_type = al.DownstreamEnd
    c.response_flags.upstream_retry_limit_exceeded = True
    tls = c.tls_properties
    tls.tls_version = al.TLSProperties.TLSv1_3
    tls.tls_cipher_suite.value = 0x1301
    tls.tls_sni_hostname = "reviews.default"
    tls.peer_certificate_properties.subject_alt_name.add(dns="x.example")
    tls.peer_certificate_properties.subject_alt_name.add(uri="spiffe://cluster.local/ns/shop/sa/cart")
    r = e.request
    r.request_method = base_pb2.POST
    r.scheme, r.authority, r.path = "https", "reviews:9080", "/reviews/1"
    r.user_agent, r.referer, r.forwarded_for = "curl/8", "https://a/", "192.0.2.1"
    r.request_id = "req-1"
    r.request_headers_bytes, r.request_body_bytes = 300, 20
    r.request_headers["traceparent"] = f"00-{TRACE}-{SPAN}-01"
    s = e.response
    s.response_code.value = 201
    s.response_headers_bytes, s.response_body_bytes = 100, 2000
    s.response_code_details = "via_upstream"
    return e


def http_batch(*entries: al.HTTPAccessLogEntry) -> bytes:
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend(entries)
    return message.SerializeToString()


def tcp_batch(*entries: al.TCPAccessLogEntry) -> bytes:
    message = als_pb2.StreamAccessLogsMessage()
    message.tcp_logs.log_entry.extend(entries)
    return message.SerializeToString()


def both(payloads: list[bytes], batch_id: str = "b-1"):
    fast = check_frame(decode_batch(payloads, STREAM, batch_id=batch_id))
    slow = check_frame(decode_reference(payloads, STREAM, batch_id=batch_id))
    assert_frame_equal(fast, slow)
    return fast


def _with(build):
    e = al.HTTPAccessLogEntry()
    build(e)
    return e


def _tcp():
    e = al.TCPAccessLogEntry()
    e.common_properties.upstream_cluster = "outbound|3306||mysql.db.svc.cluster.local"
    e.common_properties.stream_id = "conn-9"
    e.common_properties.access_log_type = al.TcpConnectionEnd
    e.connection_properties.received_bytes = 11
    e.connection_properties.sent_bytes = 22
    return e


def test_full_http_entry():
    row = both([http_batch(full_http())]).row(0, named=True)
    assert row["Method"] == "POST" and row["Protocol"] == "HTTP2" and row["ResponseCode"] == 201
    assert row["ResponseFlags"] == ["URX"] and row["ResponseFlagsMask"] == 1 << 15
    assert (row["TraceId"], row["SpanId"]) == (TRACE, SPAN)
    assert row["UpstreamHost"] == "[fd00::9]:9080"
    assert row["DownstreamRemoteAddress"] == "10.1.0.7:51234"
    assert row["SourcePrincipal"] == "spiffe://cluster.local/ns/shop/sa/cart"
    assert (row["SourceWorkload"], row["SourceNamespace"]) == ("cart", "shop")
    assert (row["DestinationService"], row["DestinationSubset"], row["DestinationPort"]) == (
        "reviews.default.svc.cluster.local",
        "v2",
        9080,
    )
    assert (row["TlsVersion"], row["TlsCipherSuite"]) == ("TLSv1_3", "TLS_AES_128_GCM_SHA256")
    assert row["Duration"] == 9_000 and row["TimeToLastDownstreamTxByte"] == 7_000
    assert row["BatchId"] == "b-1" and row["LogName"] == "mesh-als" and row["LogKind"] == "http"


def test_tcp_entry():
    row = both([tcp_batch(_tcp())]).row(0, named=True)
    assert row["LogKind"] == "tcp" and row["AccessLogType"] == "TcpConnectionEnd"
    assert (row["TcpReceivedBytes"], row["TcpSentBytes"]) == (11, 22)
    assert row["RequestId"] == "conn-9" and row["Method"] == "" and row["Protocol"] == ""
    assert (row["SourceWorkload"], row["SourceNamespace"]) == ("productpage-v1", "default")


def test_missing_optional_fields_are_nulls_or_defaults():
    row = both([http_batch(al.HTTPAccessLogEntry())]).row(0, named=True)
    assert row["TimeToLastRxByte"] is None and row["TimeToLastDownstreamTxByte"] is None
    assert row["Duration"] == 0 and row["ResponseCode"] == 0 and row["ResponseFlags"] == []
    assert row["UpstreamHost"] == "" and row["TraceId"] == "" and row["TlsCipherSuite"] == ""


def test_duration_falls_back_to_time_to_last_downstream_tx_byte():
    entry = _with(lambda e: e.common_properties.time_to_last_downstream_tx_byte.FromNanoseconds(77))
    assert both([http_batch(entry)])["Duration"].to_list() == [77]


@pytest.mark.parametrize(("field", "code"), codes.RESPONSE_FLAGS)
def test_each_response_flag_maps_to_its_code_and_bit(field, code):
    def build(e):
        flags = e.common_properties.response_flags
        if field == codes.UNAUTHORIZED_FLAG:
            flags.unauthorized_details.reason = al.ResponseFlags.Unauthorized.EXTERNAL_SERVICE
        else:
            setattr(flags, field, True)

    row = both([http_batch(_with(build))]).row(0, named=True)
    assert row["ResponseFlags"] == [code]
    assert row["ResponseFlagsMask"] == 1 << [c for _, c in codes.RESPONSE_FLAGS].index(code)


def test_several_flags_keep_bit_order():
    def build(e):
        e.common_properties.response_flags.no_cluster_found = True
        e.common_properties.response_flags.upstream_connection_failure = True

    row = both([http_batch(_with(build))]).row(0, named=True)
    assert row["ResponseFlags"] == ["UF", "NC"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-{SPAN}-01", "x-b3-traceid": "a" * 32}, (TRACE, SPAN)),
        ({"x-b3-traceid": "a" * 16, "x-b3-spanid": "b" * 16}, ("0" * 16 + "a" * 16, "b" * 16)),
        ({"x-b3-traceid": "a" * 32, "x-b3-spanid": "zz"}, ("a" * 32, "")),
        ({"b3": f"{TRACE}-{SPAN}-1-{'c' * 16}"}, (TRACE, SPAN)),
        ({"b3": f"{'d' * 16}-{SPAN}"}, ("0" * 16 + "d" * 16, SPAN)),
        ({"b3": "1"}, ("", "")),
        ({"traceparent": f"00-{'0' * 32}-{SPAN}-01"}, ("", "")),  # all-zero trace id
        ({"traceparent": "garbage", "b3": f"{TRACE}-{SPAN}"}, (TRACE, SPAN)),
        ({"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"}, ("", "")),  # spec: lower-case hex
        ({"traceparent": f"01-{TRACE}-{SPAN}-01-future"}, (TRACE, SPAN)),
        ({}, ("", "")),
    ],
)
def test_trace_context(headers, expected):
    entry = _with(lambda e: e.request.request_headers.update(headers))
    row = both([http_batch(entry)]).row(0, named=True)
    assert (row["TraceId"], row["SpanId"]) == expected


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            ("reviews.default.svc.cluster.local", "v2", 9080, "productpage-v1"),
        ),
        ("inbound|9080||", ("reviews", "", 9080, "")),
        ("plain-cluster", ("plain-cluster", "", 0, "")),
        ("outbound|70000|v1|x", ("x", "v1", 0, "productpage-v1")),
        ("", ("", "", 0, "")),
    ],
)
def test_istio_cluster_names(cluster, expected):
    def build(e):
        e.common_properties.upstream_cluster = cluster
        e.request.authority = "reviews:9080"

    row = both([http_batch(_with(build))]).row(0, named=True)
    got = (row["DestinationService"], row["DestinationSubset"], row["DestinationPort"], row["SourceWorkload"])
    assert got == expected


def test_spiffe_peer_without_istio_shape_is_principal_only():
    def build(e):
        sans = e.common_properties.tls_properties.peer_certificate_properties.subject_alt_name
        sans.add(uri="spiffe://td/workload/x")
        e.common_properties.upstream_cluster = "inbound|9080||"

    row = both([http_batch(_with(build))]).row(0, named=True)
    assert row["SourcePrincipal"] == "spiffe://td/workload/x"
    assert (row["SourceWorkload"], row["SourceNamespace"]) == ("", "")


def test_mixed_batches_keep_payload_order_and_empty_batch_has_schema():
    payloads = [tcp_batch(_tcp()), http_batch(full_http(), al.HTTPAccessLogEntry()), b"", tcp_batch(_tcp())]
    assert both(payloads)["LogKind"].to_list() == ["tcp", "http", "http", "tcp"]
    assert both([]).height == 0
    assert both([b""]).height == 0


def test_identifier_on_first_message_is_ignored():
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "other"
    message.identifier.node.id = "n" * 5000
    message.http_logs.log_entry.append(full_http())
    assert both([message.SerializeToString()])["LogName"].to_list() == ["mesh-als"]


def test_decode_error_names_message_and_offset():
    good = http_batch(full_http())
    with pytest.raises(DecodeError) as info:
        decode_batch([good, good, b"\x12\x05ab"], STREAM)
    assert (info.value.message_index, info.value.offset) == (2, 0)
    assert "message 2 at byte 0" in str(info.value)
    assert isinstance(info.value, ValueError)


# --- properties -----------------------------------------------------------------------
_text = st.text(max_size=12)
_hex = st.text("0123456789abcdef", min_size=16, max_size=32)
_ns = st.one_of(st.none(), st.integers(-(10**6), 10**13))


@st.composite
def _common(draw, c):
    for name in (
        "time_to_last_rx_byte",
        "time_to_first_upstream_rx_byte",
        "time_to_last_downstream_tx_byte",
        "duration",
    ):
        value = draw(_ns)
        if value is not None:
            getattr(c, name).FromNanoseconds(value)
    c.start_time.FromNanoseconds(draw(st.integers(0, 2**62)))
    c.upstream_cluster = draw(
        st.one_of(
            _text,
            st.builds(
                "|".join,
                st.lists(
                    st.sampled_from(["inbound", "outbound", "9080", "v1", "", "h.ns"]), min_size=4, max_size=4
                ),
            ),
        )
    )
    if draw(st.booleans()):
        c.upstream_remote_address.CopyFrom(
            _addr(draw(st.sampled_from(["10.0.0.1", "::1", ""])), draw(st.integers(0, 65535)))
        )
    for field, _code in codes.RESPONSE_FLAGS:
        if draw(st.integers(0, 9)) == 0:
            if field == codes.UNAUTHORIZED_FLAG:
                c.response_flags.unauthorized_details.SetInParent()
            else:
                setattr(c.response_flags, field, True)
    if draw(st.booleans()):
        c.tls_properties.tls_version = draw(st.integers(0, 6))
        if draw(st.booleans()):
            c.tls_properties.tls_cipher_suite.value = draw(st.sampled_from([0x1301, 0xC02F, 0xBEEF]))
        sans = c.tls_properties.peer_certificate_properties.subject_alt_name
        for uri in draw(
            st.lists(st.sampled_from(["spiffe://td/ns/a/sa/b", "spiffe://x", "urn:x", ""]), max_size=2)
        ):
            sans.add(uri=uri)
    c.access_log_type = draw(st.integers(0, 20))
    c.stream_id = draw(_text)
    c.upstream_request_attempt_count = draw(st.integers(0, 2**32 - 1))


@st.composite
def http_entries(draw):
    e = al.HTTPAccessLogEntry(protocol_version=draw(st.integers(0, 6)))
    draw(_common(e.common_properties))
    if draw(st.booleans()):
        r = e.request
        r.request_method = draw(st.integers(0, 12))
        r.authority, r.path, r.request_id = draw(_text), draw(_text), draw(_text)
        r.request_body_bytes = draw(st.integers(0, 2**64 - 1))
        names = st.sampled_from(["traceparent", "x-b3-traceid", "x-b3-spanid", "b3", "other"])
        values = st.one_of(_text, _hex, st.builds(lambda t, s: f"00-{t}-{s}-01", _hex, _hex))
        r.request_headers.update(draw(st.dictionaries(names, values, max_size=4)))
    if draw(st.booleans()):
        e.response.response_code.value = draw(st.integers(0, 70000))
    return e


@st.composite
def tcp_entries(draw):
    e = al.TCPAccessLogEntry()
    draw(_common(e.common_properties))
    e.connection_properties.sent_bytes = draw(st.integers(0, 2**64 - 1))
    return e


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.lists(http_entries(), max_size=4).map(lambda es: http_batch(*es)),
            st.lists(tcp_entries(), max_size=3).map(lambda es: tcp_batch(*es)),
        ),
        max_size=4,
    )
)
def test_random_entries_decode_like_the_reference(payloads):
    both(payloads)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=3))
def test_garbage_never_crashes_only_decode_error(payloads):
    try:
        frame = decode_batch(payloads, STREAM)
    except DecodeError as exc:
        assert exc.message_index is None or 0 <= exc.message_index < len(payloads)
    else:
        check_frame(frame)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_real_payload_never_crashes(data):
    payload = bytearray(http_batch(full_http()))
    for _ in range(data.draw(st.integers(1, 4))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        check_frame(decode_batch([bytes(payload[:cut])], STREAM))
    except DecodeError:
        pass
