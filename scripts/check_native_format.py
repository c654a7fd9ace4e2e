"""Check the Native block writer on random string columns; exit 1 on a wrong byte.

Each round builds Arrow string columns — ``string_view`` (inline and out-of-line
strings, several data buffers, slices, nulls), ``large_string`` and ``string`` — writes
them with :func:`meshloop.store.native_format.native_block` as ``String``,
``Nullable(String)``, ``LowCardinality(String)`` and ``Array(String)``, reads the block
back with an independent reader of ClickHouse's Native format, and compares. Run it
under AddressSanitizer to catch out-of-bounds access
(``tests/unit/test_native_format_sanitized.py`` does)::

    .venv/bin/python scripts/check_native_format.py ROUNDS [SEED]
"""

from __future__ import annotations

import random
import struct
import sys

import pyarrow as pa

from meshloop.store.native_format import native_block


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        if len(out) != n:
            raise ValueError("block ends early")
        self.at += n
        return out

    def string(self) -> str:
        return self.take(self.varint()).decode()

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])


def read_block(data: bytes) -> dict[str, tuple[str, list[object]]]:
    """The subset of the Native format the writer emits for strings."""
    reader = _Reader(data)
    columns, rows = reader.varint(), reader.varint()
    out: dict[str, tuple[str, list[object]]] = {}
    for _ in range(columns):
        name, kind = reader.string(), reader.string()
        if kind == "String":
            out[name] = (kind, [reader.string() for _ in range(rows)])
        elif kind == "Nullable(String)":
            nulls = reader.take(rows)
            values = [reader.string() for _ in range(rows)]
            out[name] = (kind, [None if null else value for null, value in zip(nulls, values, strict=True)])
        elif kind == "LowCardinality(String)":
            version, flags, count = reader.u64(), reader.u64(), reader.u64()
            keys = [reader.string() for _ in range(count)]
            width = {0: 1, 1: 2, 2: 4}[flags & 0xFF]
            if version != 1 or flags >> 8 != 0b110 or keys[:1] != [""] or reader.u64() != rows:
                raise ValueError(f"{name}: bad LowCardinality header")
            if width != (1 if count <= 256 else 2 if count <= 65536 else 4):
                raise ValueError(f"{name}: index width {width} for {count} keys")
            raw = reader.take(rows * width)
            indexes = [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]
            out[name] = (kind, [keys[i] for i in indexes])
        elif kind == "Array(String)":
            ends = [reader.u64() for _ in range(rows)]
            flat = [reader.string() for _ in range(ends[-1] if ends else 0)]
            out[name] = (kind, [flat[a:b] for a, b in zip([0, *ends], ends, strict=False)])
        else:
            raise ValueError(f"{name}: unexpected type {kind}")
    if reader.at != len(data):
        raise ValueError(f"{len(data) - reader.at} bytes after the block")
    return out


_ALPHABET = "ab é✓\0\n'"


def _text(rng: random.Random) -> str:
    size = rng.choice([0, 1, 4, 11, 12, 13, 30, 200])
    return "".join(rng.choice(_ALPHABET) for _ in range(size))


def _views(rng: random.Random, values: list[str | None]) -> pa.Array:
    """A string_view array; half the time concatenated from pieces (several data buffers)."""
    if rng.random() < 0.5:
        return pa.array(values, pa.string_view())
    return pa.concat_arrays([pa.array(values[i : i + 7], pa.string_view()) for i in range(0, len(values), 7)])


def one_round(rng: random.Random) -> None:
    rows = rng.randint(1, 40)
    pad = rng.randint(0, 5)
    few = [_text(rng) for _ in range(rng.choice([1, 3, 300]))]
    texts = [None if rng.random() < 0.2 else _text(rng) for _ in range(rows + pad)]
    flat = [rng.choice(few) for _ in range(rows + pad)]
    lists = [None if rng.random() < 0.2 else [_text(rng) for _ in range(rng.randint(0, 3))]
             for _ in range(rows + pad)]  # fmt: skip
    table = pa.table({
        "views": _views(rng, texts).slice(pad),
        "large": pa.array(texts, pa.large_string()).slice(pad),
        "small": pa.array(texts, pa.string()).slice(pad),
        "lc": _views(rng, list(flat)).slice(pad),
        "lc_large": pa.array(flat, pa.large_string()).slice(pad),
        "lists": pa.array(lists, pa.large_list(pa.string_view())).slice(pad),
    })  # fmt: skip
    block = native_block(table, low_cardinality=("lc", "lc_large"))
    assert block is not None
    got = read_block(block)
    for name in table.column_names:
        expected = table.column(name).to_pylist()
        kind, values = got[name]
        if name == "lists":
            expected = [v or [] for v in expected]
        elif kind == "String":
            expected = [v or "" for v in expected]
        if values != expected:
            raise AssertionError(f"{name} ({kind}): {values!r} != {expected!r}")


def main(rounds: int, seed: int) -> int:
    rng = random.Random(seed)
    for _ in range(rounds):
        one_round(rng)
    print(f"{rounds} rounds: no mismatch")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
