"""Fuzz the C access-log reader with mutated real payloads; exit 1 on a wrong answer.

Each round mutates realistic ``StreamAccessLogsMessage`` payloads (byte flips, cuts,
insertions, splices) and decodes two of them around an intact payload, strictly or
skipping the malformed ones. A decode must either be refused with ``NativeDecodeError``
or give Arrow arrays that pass full validation (views, UTF-8). Crashes and memory
errors show up as a dead process — run it under AddressSanitizer to catch the silent
ones (``tests/unit/test_als_decode_sanitized.py`` does)::

    .venv/bin/python scripts/fuzz_als_decode.py ROUNDS [SEED]
"""

from __future__ import annotations

import random
import sys
import time

from envoy.service.accesslog.v3 import als_pb2

from benchmarks.accesslog_decode import sample_payloads
from meshloop.accesslog import native


def _seeds() -> list[bytes]:
    seeds = sample_payloads(entries=300, per_message=3, start_ns=time.time_ns())
    message = als_pb2.StreamAccessLogsMessage()
    entry = message.tcp_logs.log_entry.add()
    sans = entry.common_properties.tls_properties.peer_certificate_properties.subject_alt_name
    sans.add(uri="spiffe://td/ns/a/sa/b")
    entry.common_properties.response_flags.unauthorized_details.SetInParent()
    entry.connection_properties.sent_bytes = 5
    seeds.append(message.SerializeToString())
    return seeds


def _mutate(payload: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.7 and data:
            del data[rng.randrange(len(data)) : rng.randrange(len(data) + 1)]
        elif op < 0.85:
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            data += rng.choice(seeds)[: rng.randrange(200)]
    return bytes(data)


def main(rounds: int, seed: int) -> int:
    rng = random.Random(seed)
    seeds = _seeds()
    decoded = refused = 0
    for round_ in range(rounds):
        batch = [_mutate(rng.choice(seeds), rng, seeds), rng.choice(seeds)]
        batch.append(_mutate(rng.choice(seeds), rng, seeds))
        if round_ % 2:  # the collector's way: bad payloads skipped, their rows rolled back
            columns, errors = native.decode_columns_skipping(batch)
            refused += len(errors)
        else:
            try:
                columns = native.decode_columns(batch)
            except native.NativeDecodeError:
                refused += 1
                continue
        for column in columns.values():
            column.validate(full=True)
        decoded += 1
    print(f"{rounds} rounds: {decoded} decoded, {refused} refused, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1))
