"""The store contract, run against every real backend.

- ``embedded``: chdb in this process.
- ``server``: clickhouse-connect over real HTTP to the embedded store's ClickHouse HTTP
  interface (a real ClickHouse engine behind real HTTP).
- ``external``: a ClickHouse server at ``$MESHLOOP_TEST_CLICKHOUSE_URL``, when set.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from meshloop.errors import StoreError, StoreUnavailable
from meshloop.store.base import Store
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.server import ServerStore
from tests.conftest import unique_database

pytestmark = pytest.mark.integration

BACKENDS = ["embedded", "server"] + (["external"] if os.environ.get("MESHLOOP_TEST_CLICKHOUSE_URL") else [])


class BackgroundClickHouseHttp:
    """The embedded store's HTTP interface on a free port, served from its own thread."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        from meshloop.api.clickhouse_http import ClickHouseAuth, start_clickhouse_http

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner, self.port = await start_clickhouse_http(self.store, ClickHouseAuth(), "127.0.0.1", 0)
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> BackgroundClickHouseHttp:
        self._thread.start()
        assert self._ready.wait(30), "ClickHouse HTTP interface did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def http_interface(chdb_path: Path) -> Iterator[BackgroundClickHouseHttp]:
    store = EmbeddedStore(chdb_path, database="default")
    with BackgroundClickHouseHttp(store) as server:
        yield server
    store.close()


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, chdb_path: Path, http_interface: BackgroundClickHouseHttp
) -> Iterator[Store]:
    database = unique_database(request.node.name)
    backend: Store
    if request.param == "embedded":
        backend = EmbeddedStore(chdb_path, database=database)
    elif request.param == "server":
        backend = ServerStore(f"http://default:@127.0.0.1:{http_interface.port}", database=database)
    else:
        backend = ServerStore(os.environ["MESHLOOP_TEST_CLICKHOUSE_URL"], database=database)
        backend.database = database
        backend.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    yield backend
    backend.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    backend.close()


def test_types_round_trip_through_polars(store: Store) -> None:
    db = store.database
    store.command(
        f"CREATE TABLE {db}.typed (id UInt64, name LowCardinality(String), ts DateTime64(9, 'UTC'), "
        "tags Array(String), attrs Map(LowCardinality(String), String), maybe Nullable(Int32), "
        "ratio Float64) ENGINE = MergeTree ORDER BY id"
    )
    ts = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "id": pl.Series([1, 2], dtype=pl.UInt64),
            "name": ["a", "b"],
            "ts": pl.Series([ts, ts], dtype=pl.Datetime("ns", "UTC")),
            "tags": [["x", "y"], []],
            "attrs": pl.Series(
                [[{"key": "k", "value": "v"}], []],
                dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String})),
            ),
            "maybe": pl.Series([None, 7], dtype=pl.Int32),
            "ratio": [0.5, 1.5],
        }
    )
    assert store.insert_df("typed", frame) == 2
    back = store.query_df(
        f"SELECT id, name, ts, tags, attrs['k'] AS k, maybe, ratio FROM {db}.typed ORDER BY id"
    )
    assert back["id"].to_list() == [1, 2]
    assert back["name"].to_list() == ["a", "b"]
    assert back["ts"].dt.replace_time_zone("UTC").to_list() == [ts, ts]
    assert back["tags"].to_list() == [["x", "y"], []]
    assert back["k"].to_list() == ["v", ""]
    assert back["maybe"].to_list() == [None, 7]
    assert back["ratio"].to_list() == [0.5, 1.5]


def test_large_insert_reads_back_the_same_count_and_sums(store: Store) -> None:
    db = store.database
    store.command(f"CREATE TABLE {db}.big (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
    rows = 300_000
    frame = pl.DataFrame({"n": pl.arange(0, rows, dtype=pl.UInt64, eager=True)}).with_columns(
        s=pl.col("n").cast(pl.String)
    )
    assert store.insert_df("big", frame) == rows
    assert store.query_rows(f"SELECT count(), sum(n), sum(length(s)) FROM {db}.big") == [
        (rows, rows * (rows - 1) // 2, frame["s"].str.len_bytes().sum())
    ]


def test_dedup_token_makes_a_replayed_insert_idempotent(store: Store) -> None:
    db = store.database
    store.command(
        f"CREATE TABLE {db}.once (n UInt64) ENGINE = MergeTree ORDER BY n "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    batch = pl.DataFrame({"n": pl.Series([1, 2, 3], dtype=pl.UInt64)})
    store.insert_df("once", batch, dedup_token="batch-000001")
    store.insert_df("once", batch, dedup_token="batch-000001")
    store.insert_df("once", batch, dedup_token="batch-000002")
    assert store.query_rows(f"SELECT count() FROM {db}.once") == [(6,)]


def test_a_prepared_insert_lands_once_however_often_it_is_retried(store: Store) -> None:
    db = store.database
    store.command(
        f"CREATE TABLE {db}.prepared (n UInt64, s LowCardinality(String)) ENGINE = MergeTree ORDER BY n "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    frame = pl.DataFrame({"n": pl.Series([1, 2, 3], dtype=pl.UInt64), "s": ["a", "b", "a"]})
    prepared = store.prepare_insert("prepared", frame)  # encoded once, on any thread
    assert (prepared.table, prepared.qualified, prepared.rows) == ("prepared", f"{db}.prepared", 3)
    assert store.insert_prepared(prepared, dedup_token="batch-1.prepared") == 3
    assert store.insert_prepared(prepared, dedup_token="batch-1.prepared") == 3  # a retry
    assert store.query_rows(f"SELECT n, s FROM {db}.prepared ORDER BY n") == [(1, "a"), (2, "b"), (3, "a")]
    empty = store.prepare_insert("prepared", frame.clear())
    assert empty.rows == 0 and store.insert_prepared(empty, dedup_token="batch-2.prepared") == 0


def test_query_parameters_are_bound_not_spliced(store: Store) -> None:
    hostile = "x'); DROP DATABASE default; --"
    rows = store.query_rows("SELECT {value:String} AS v, {n:UInt32} + 1", {"value": hostile, "n": 41})
    assert rows == [(hostile, 42)]


@pytest.mark.parametrize(("sql", "code"), [("SELEC 1", 62), ("SELECT * FROM nowhere_table_xyz", 60)])
def test_errors_carry_clickhouse_codes(store: Store, sql: str, code: int) -> None:
    with pytest.raises(StoreError) as info:
        store.query_df(sql)
    assert info.value.code == code
    assert f"Code: {code}" in str(info.value)


def test_bad_identifiers_and_tokens_are_refused_before_sql(store: Store) -> None:
    frame = pl.DataFrame({"n": [1]})
    with pytest.raises(ValueError, match="plain identifier"):
        store.insert_df("t; DROP TABLE x", frame)
    with pytest.raises(ValueError, match="dedup token"):
        store.insert_df("t", frame, dedup_token="a'b")


def test_unreachable_server_is_store_unavailable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable):
        ServerStore(f"http://127.0.0.1:{port}", connect_timeout=1)


def test_database_in_the_url_path_wins(http_interface: BackgroundClickHouseHttp) -> None:
    database = unique_database("url_path")
    store = ServerStore(f"http://127.0.0.1:{http_interface.port}/{database}", database="ignored")
    try:
        assert store.database == database
        assert store.query_rows(
            "SELECT count() FROM system.databases WHERE name = {d:String}", {"d": database}
        ) == [(1,)]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {database}")
        store.close()


def test_embedded_store_is_safe_to_share_between_threads(embedded_store: EmbeddedStore) -> None:
    """Writers and readers on several threads at once: every row lands, nothing raises."""
    from concurrent.futures import ThreadPoolExecutor

    db = embedded_store.database
    embedded_store.command(f"CREATE TABLE {db}.shared (worker UInt8, n UInt32) ENGINE = MergeTree ORDER BY n")

    def work(worker: int) -> int:
        for batch in range(10):
            frame = pl.DataFrame(
                {
                    "worker": pl.Series([worker] * 1000, dtype=pl.UInt8),
                    "n": pl.Series(range(batch * 1000, (batch + 1) * 1000), dtype=pl.UInt32),
                }
            )
            embedded_store.insert_df("shared", frame)
            embedded_store.query_rows(f"SELECT count() FROM {db}.shared")
        return worker

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert sorted(pool.map(work, range(6))) == list(range(6))
    assert embedded_store.query_rows(
        f"SELECT worker, count() FROM {db}.shared GROUP BY worker ORDER BY worker"
    ) == [(worker, 10_000) for worker in range(6)]


def _purges(store: EmbeddedStore) -> int:
    rows = store.query_rows("SELECT value FROM system.events WHERE event = 'MemoryAllocatorPurge'")
    return int(rows[0][0]) if rows else 0


def test_embedded_release_memory_purges_once_enough_rows_were_inserted(
    embedded_store: EmbeddedStore,
) -> None:
    from meshloop.store.embedded import PURGE_AFTER_ROWS

    table = f"{embedded_store.database}.t"
    embedded_store.command(f"CREATE TABLE {table} (n UInt64) ENGINE = MergeTree ORDER BY n")
    embedded_store.insert_df("t", pl.DataFrame({"n": list(range(10))}))
    before = _purges(embedded_store)
    embedded_store.release_memory()  # 10 rows since the last purge: not worth one
    assert _purges(embedded_store) == before
    embedded_store.insert_df("t", pl.DataFrame({"n": list(range(PURGE_AFTER_ROWS))}))
    embedded_store.release_memory()
    assert _purges(embedded_store) == before + 1
    embedded_store.release_memory()  # nothing inserted since
    assert _purges(embedded_store) == before + 1
