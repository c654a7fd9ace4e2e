"""Arrow → ClickHouse Native blocks (meshloop.store.native_format), read by the real engine.

Every test inserts the same Arrow data twice into identical tables — once as a Native
block, once through chdb's ``Python()`` table function (the reference) — and compares
what ClickHouse stored, value for value.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshloop.store.embedded import EmbeddedStore
from meshloop.store.native_format import native_block, native_block_parts

COLUMNS = (
    "id UInt32, u16 Nullable(UInt16), i64 Int64, f Nullable(Float64), ok Nullable(Bool), "
    "at Nullable(DateTime64(9, 'UTC')), day Date32, s Nullable(String), lc LowCardinality(String), "
    "lc_as_string String, tags Array(String), lc_tags Array(LowCardinality(String))"
)


def _tables(store: EmbeddedStore, columns: str = COLUMNS) -> tuple[str, str]:
    for name in ("native", "reference"):
        store.command(f"CREATE TABLE {store.database}.{name} ({columns}) ENGINE = MergeTree ORDER BY tuple()")
    return f"{store.database}.native", f"{store.database}.reference"


def _insert_both(store: EmbeddedStore, data: pa.Table, low_cardinality: tuple[str, ...] = ()) -> None:
    native, reference = _tables(store) if not _exists(store) else (f"{store.database}.native",
                                                                      f"{store.database}.reference")
    block = native_block(data, low_cardinality)
    assert block is not None
    names = ", ".join(f"`{name}`" for name in data.column_names)
    store.insert_raw(f"INSERT INTO {native} ({names})", "Native", block)
    store._insert_through_python(reference, data, {})


def _exists(store: EmbeddedStore) -> bool:
    return bool(store.query_rows(f"SELECT 1 FROM system.tables WHERE database = '{store.database}' "
                                 "AND name = 'native'"))  # fmt: skip


def _stored(store: EmbeddedStore, table: str) -> list[tuple[object, ...]]:
    return store.query_rows(f"SELECT * FROM {store.database}.{table} ORDER BY id")


def _sample(rows: int = 6) -> pa.Table:
    strings = ["", "x", "twelve bytes", "thirteen byte", "é ünïcödé ✓", "quote ' \" \\ tab\t nl\n nul\0"]
    return pa.table({
        "id": pa.array(range(rows), pa.uint32()),
        "u16": pa.array([None if i % 3 == 1 else i * 1000 for i in range(rows)], pa.uint16()),
        "i64": pa.array([-(2**63) + i if i % 2 else 2**63 - 1 - i for i in range(rows)], pa.int64()),
        "f": pa.array([None if i == 2 else i / 3 for i in range(rows)], pa.float64()),
        "ok": pa.array([None if i == 4 else i % 2 == 0 for i in range(rows)]),
        "at": pa.array([None if i == 5 else 1_795_000_000_123_456_789 + i for i in range(rows)],
                       pa.timestamp("ns", "UTC")),
        "day": pa.array([20_000 + i for i in range(rows)], pa.date32()),
        "s": pa.array([None if i == 3 else strings[i % len(strings)] for i in range(rows)], pa.string_view()),
        "lc": pa.array([strings[i % 3] for i in range(rows)], pa.string_view()),
        "lc_as_string": pa.array([strings[(i + 1) % 3] for i in range(rows)], pa.large_string()),
        "tags": pa.array([None if i == 1 else [strings[j % 6] for j in range(i)] for i in range(rows)],
                         pa.large_list(pa.string_view())),
        "lc_tags": pa.array([["UF", "URX"] if i % 2 else [] for i in range(rows)],
                            pa.large_list(pa.string())),
    })  # fmt: skip


def test_every_supported_type_is_stored_as_through_arrow(embedded_store: EmbeddedStore) -> None:
    _insert_both(embedded_store, _sample(), low_cardinality=("lc", "lc_as_string"))
    native = _stored(embedded_store, "native")
    assert native == _stored(embedded_store, "reference")
    assert native[1][1] is None and native[3][7] is None  # NULLs stay NULL
    assert native[1][10] == []  # a null list is an empty Array (ClickHouse has no NULL arrays)
    assert native[5][7] == "quote ' \" \\ tab\t nl\n nul\0"


def test_chunked_and_sliced_columns(embedded_store: EmbeddedStore) -> None:
    whole = _sample(40)
    pieces = pa.concat_tables([whole.slice(0, 7), whole.slice(7, 20), whole.slice(27)])
    assert pieces.column("s").num_chunks == 3 and pieces.column("s").chunks[1].offset == 7
    _insert_both(embedded_store, pieces, low_cardinality=("lc",))
    assert _stored(embedded_store, "native") == _stored(embedded_store, "reference")
    assert len(_stored(embedded_store, "native")) == 40


@pytest.mark.parametrize("distinct", [301, 70_001])  # UInt16 and UInt32 dictionary indexes
def test_low_cardinality_dictionaries_past_one_byte_indexes(
    embedded_store: EmbeddedStore, distinct: int
) -> None:
    rows = distinct + 5_000
    values = [f"value-{i % distinct:06d}" + ("-long suffix" if i % 2 else "") for i in range(rows)]
    data = pa.table({"id": pa.array(range(rows), pa.uint32()), "lc": pa.array(values, pa.string_view())})
    _tables(embedded_store, "id UInt32, lc LowCardinality(String)")
    _insert_both(embedded_store, data, low_cardinality=("lc",))
    assert _stored(embedded_store, "native") == _stored(embedded_store, "reference")
    count = embedded_store.query_rows(f"SELECT uniqExact(lc) FROM {embedded_store.database}.native")
    assert count == [(len(set(values)),)] and len(set(values)) > distinct


def test_a_long_string(embedded_store: EmbeddedStore) -> None:
    long = pa.array(["p" * (1 << 20), "q"], pa.string_view())
    data = pa.table({"id": pa.array([0, 1], pa.uint32()), "s": long})
    _tables(embedded_store, "id UInt32, s String")
    _insert_both(embedded_store, data)
    assert [len(row[1]) for row in _stored(embedded_store, "native")] == [1 << 20, 1]


def test_unsupported_types_fall_back_to_arrow(embedded_store: EmbeddedStore) -> None:
    data = pa.table({
        "id": pa.array([1], pa.uint32()),
        "m": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string())),
    })  # fmt: skip
    assert native_block(data) is None and native_block_parts(data) is None
    embedded_store.command(
        f"CREATE TABLE {embedded_store.database}.t (id UInt32, m Map(String, String)) "
        "ENGINE = MergeTree ORDER BY id"
    )
    assert embedded_store.insert_df("t", data) == 1
    assert embedded_store.query_rows(f"SELECT m['k'] FROM {embedded_store.database}.t") == [("v",)]


def test_insert_df_sends_native_and_keeps_deduplication(embedded_store: EmbeddedStore) -> None:
    embedded_store.command(
        f"CREATE TABLE {embedded_store.database}.t (id UInt32, lc LowCardinality(String)) "
        "ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100"
    )
    data = pa.table({"id": pa.array([1, 2], pa.uint32()), "lc": pa.array(["a", "b"], pa.string_view())})
    for _ in range(2):  # a replayed batch: the same token, dropped by ClickHouse
        embedded_store.insert_df("t", data, dedup_token="batch-1")
    embedded_store.insert_df("t", data, dedup_token="batch-2")
    assert embedded_store.query_rows(f"SELECT count() FROM {embedded_store.database}.t") == [(4,)]
    assert embedded_store._low_cardinality_columns(f"{embedded_store.database}.t") == frozenset({"lc"})


_TEXT = st.one_of(st.none(), st.text(max_size=20), st.text(min_size=12, max_size=14))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_TEXT, min_size=1, max_size=60), start=st.integers(0, 10))
def test_strings_round_trip(embedded_store: EmbeddedStore, values: list[str | None], start: int) -> None:
    array = pa.array(values, pa.string_view()).slice(min(start, len(values) - 1))
    data = pa.table({"s": array, "l": pa.array([v or "" for v in array.to_pylist()], pa.large_string())})
    block = native_block(data, low_cardinality=("l",))
    assert block is not None
    table = f"{embedded_store.database}.rt"
    embedded_store.command(f"DROP TABLE IF EXISTS {table} SYNC")
    embedded_store.command(
        f"CREATE TABLE {table} (s Nullable(String), l LowCardinality(String)) ENGINE = Memory"
    )
    embedded_store.insert_raw(f"INSERT INTO {table} (s, l)", "Native", block)
    stored = embedded_store.query_rows(f"SELECT s, l FROM {table}")
    assert stored == [(v, v or "") for v in array.to_pylist()]
