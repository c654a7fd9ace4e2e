"""Access-log decode throughput: ``decode_batch`` beside the obvious decoder and the parser alone.

Realistic Istio sidecar HTTP entries (~650 bytes serialized: method, authority, path,
user agent, request id, traceparent, ``outbound|9080|v2|reviews...`` cluster, addresses,
byte counts, timings, 2% with a response flag), 100 entries per
``StreamAccessLogsMessage`` as Envoy batches them, 200,000 entries per measurement.

- ``decode_batch`` (C reader → Arrow → polars) vs ``decode_reference`` (ParseFromString
  + field-by-field Python): the speed-up over the obvious implementation.
- ``decode_batch`` vs ``StreamAccessLogsMessage.FromString`` over the same payloads
  (upb's lazy parse, no column built): the ceiling of any decoder that starts from
  Python protobuf objects.
"""

from __future__ import annotations

import random

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.service.accesslog.v3 import als_pb2

from benchmarks.harness import Result, best_rate
from meshloop.accesslog.decode import decode_batch
from meshloop.accesslog.identity import stream_identity
from meshloop.accesslog.reference import decode_reference

ENTRIES = 200_000
PER_MESSAGE = 100
STREAM = stream_identity(
    "sidecar~10.1.2.3~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local",
    "productpage.default",
    {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default",
     "LABELS": {"app": "productpage", "version": "v1"}},
    log_name="envoy.access_loggers.http_grpc",
)
_TIMINGS = (
    ("time_to_last_rx_byte", 45_000), ("time_to_first_upstream_tx_byte", 110_000),
    ("time_to_last_upstream_tx_byte", 125_000), ("time_to_first_upstream_rx_byte", 2_900_000),
    ("time_to_last_upstream_rx_byte", 3_050_000), ("time_to_first_downstream_tx_byte", 3_000_000),
    ("time_to_last_downstream_tx_byte", 3_150_000), ("duration", 3_200_000),
)


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


START_NS = 1_764_000_000_000_000_000


def sample_entry(
    i: int, rng: random.Random, start_ns: int = START_NS, spacing_ns: int = 1_000_017
) -> al.HTTPAccessLogEntry:
    """One realistic outbound sidecar entry (productpage → reviews v2), started
    ``start_ns + i × spacing_ns``."""
    e = al.HTTPAccessLogEntry(protocol_version=al.HTTPAccessLogEntry.HTTP11)
    c = e.common_properties
    c.sample_rate = 1.0
    c.start_time.FromNanoseconds(start_ns + i * spacing_ns)
    c.downstream_remote_address.CopyFrom(_address("10.1.2.3", 40_000 + i % 20_000))
    c.downstream_local_address.CopyFrom(_address("10.96.14.7", 9080))
    c.upstream_remote_address.CopyFrom(_address(f"10.1.9.{i % 40}", 9080))
    c.upstream_local_address.CopyFrom(_address("10.1.2.3", 50_000 + i % 10_000))
    for field, nanos in _TIMINGS:
        getattr(c, field).FromNanoseconds(nanos + rng.randrange(1_000_000))
    c.upstream_cluster = "outbound|9080|v2|reviews.default.svc.cluster.local"
    c.route_name = "default"
    c.upstream_request_attempt_count = 1
    c.access_log_type = al.DownstreamEnd
    c.downstream_wire_bytes_sent, c.downstream_wire_bytes_received = 1_250, 640
    request_id = f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-" \
                 f"a{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}"
    c.stream_id = request_id
    if i % 50 == 0:
        c.response_flags.upstream_connection_failure = True
    r = e.request
    r.request_method = base_pb2.GET
    r.scheme, r.authority = "http", "reviews:9080"
    r.path = f"/api/v1/reviews/{i % 1000}?user=u{i % 97}&lang=en-US&sort=desc"
    r.user_agent = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/124.0.0.0 Safari/537.36")
    r.request_id = request_id
    r.forwarded_for = "192.168.0.7"
    r.referer = "http://productpage:9080/productpage"
    r.request_headers_bytes = 412
    r.request_headers["traceparent"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
    r.request_headers["x-envoy-attempt-count"] = "1"
    s = e.response
    s.response_code.value = 503 if i % 50 == 0 else 200
    s.response_headers_bytes, s.response_body_bytes = 180, 300 + i % 700
    s.response_code_details = "upstream_reset_before_response_started" if i % 50 == 0 else "via_upstream"
    return e


def sample_payloads(
    entries: int = ENTRIES,
    per_message: int = PER_MESSAGE,
    seed: int = 7,
    start_ns: int = START_NS,
    spacing_ns: int = 1_000_017,
) -> list[bytes]:
    """Serialized ``StreamAccessLogsMessage`` payloads of ``per_message`` entries each,
    starting at ``start_ns`` and ``spacing_ns`` apart (about 1 ms by default)."""
    rng = random.Random(seed)
    payloads = []
    for start in range(0, entries, per_message):
        message = als_pb2.StreamAccessLogsMessage()
        stop = min(start + per_message, entries)
        entries_ = (sample_entry(i, rng, start_ns, spacing_ns) for i in range(start, stop))
        message.http_logs.log_entry.extend(entries_)
        payloads.append(message.SerializeToString())
    return payloads


def run() -> list[Result]:
    """Measure and return the access-log decode figures (entries/s)."""
    payloads = sample_payloads()

    def fast() -> int:
        return decode_batch(payloads, STREAM, batch_id="bench").height

    def reference() -> int:
        return decode_reference(payloads, STREAM, batch_id="bench").height

    def parse_only() -> int:
        parse = als_pb2.StreamAccessLogsMessage.FromString
        return sum(len(parse(p).http_logs.log_entry) for p in payloads)

    decode_rate = best_rate(fast, repeat=5)
    return [
        Result("accesslog decode_batch", decode_rate, "entries/s",
               "decode_reference (obvious)", best_rate(reference, repeat=2)),
        Result("accesslog decode_batch", decode_rate, "entries/s",
               "FromString only (ceiling)", best_rate(parse_only, repeat=5)),
    ]


if __name__ == "__main__":
    from benchmarks.harness import print_table

    print_table(run())
