"""The Native block writer's C code under AddressSanitizer + UBSan, and its output read
back by an independent reader of the format (scripts/check_native_format.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from meshloop.store import native_format
from scripts.check_native_format import one_round, read_block
from tests.unit.test_als_decode_sanitized import SANITIZER_FLAGS, run_sanitized


def test_random_string_columns_read_back_exactly() -> None:
    rng = random.Random(11)
    for _ in range(300):
        one_round(rng)


def test_the_reader_rejects_a_block_with_bytes_left_over() -> None:
    block = native_format.native_block(pa.table({"s": pa.array(["x"], pa.string_view())}))
    assert block is not None and read_block(block) == {"s": ("String", ["x"])}
    with pytest.raises(ValueError, match="after the block"):
        read_block(block + b"\0")


def test_the_writer_never_touches_memory_it_should_not(tmp_path: Path) -> None:
    library = native_format.build(tmp_path / "native_asan.so", SANITIZER_FLAGS)
    done = run_sanitized("check_native_format.py", ["3000", "5"], native_format.LIBRARY_ENV, library)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "3000 rounds: no mismatch" in done.stdout
