"""The embedded backend: ClickHouse as a library (chdb), persistent under the data dir.

chdb allows one database path per process and its connection is not meant for
concurrent use, so one :class:`EmbeddedStore` owns the path and serializes statements
with a lock; queries are still parallel inside ClickHouse. The same object serves the
ClickHouse HTTP interface (:mod:`meshloop.api.clickhouse_http`) through
:meth:`EmbeddedStore.execute` and :meth:`EmbeddedStore.insert_raw`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from meshloop.errors import StoreError
from meshloop.store.base import Params, Store
from meshloop.store.native_format import native_block_parts

_CODE = re.compile(r"Code: (\d+)\.")
# Once this many rows were inserted since the last purge, release_memory() hands
# ClickHouse's freed memory back to the OS: jemalloc otherwise keeps a few hundred MiB of
# an insert's buffers (about 250 MiB for 100k access-log rows) resident for seconds.
# Purging costs ~10 ms, and the next insert then faults its memory in again (in process,
# -14% insert CPU without purges), so a caller with inserts queued defers it.
PURGE_AFTER_ROWS = 20_000
# ClickHouse server settings the engine starts with (chdb passes a path's query
# parameters as startup arguments). Merges run at the lowest CPU priority: they are
# catch-up work, and on a busy host they should wait for the ingest path rather than
# compete with it; when the host is idle they run as before. Measured with
# ``benchmarks/ingest_e2e.py`` on 2 cores, 5 paired 1M-entry bursts: +6.5% entries/s and
# +5% entries per CPU-second at the median, every pair better
# (https://clickhouse.com/docs/operations/server-configuration-parameters/settings#os_threads_nice_value_merge_mutate).
ENGINE_SETTINGS: Mapping[str, str] = {"os_threads_nice_value_merge_mutate": "19"}
_open_path: Path | None = None
_open_lock = threading.Lock()


@dataclass(frozen=True)
class _NativeInsert:
    """An insert encoded as a ClickHouse Native block, in consecutive parts."""

    columns: str  # the INSERT's column list
    rows: int
    parts: list[bytes | memoryview]


def translate_chdb_error(exc: Exception) -> StoreError:
    """Turn a chdb exception into a :class:`StoreError` carrying ClickHouse's code."""
    message = str(exc).strip()
    match = _CODE.search(message)
    return StoreError(message, int(match.group(1)) if match else None)


def engine_address(path: Path) -> str:
    """chdb's connection string for ``path`` with :data:`ENGINE_SETTINGS`."""
    if "?" in str(path):
        raise StoreError(f"the embedded store's path cannot contain '?': {path}")
    return f"{path}?" + "&".join(f"{name}={value}" for name, value in ENGINE_SETTINGS.items())


class EmbeddedStore(Store):
    """ClickHouse in process through chdb, data under ``path``."""

    backend = "chdb"
    # polars exports its strings as string_view as they are (to_arrow 27 -> 3 ms per 100k
    # access-log rows); the Native writer and chdb's Python() table function read them.
    arrow_compat = pl.CompatLevel.newest()

    def __init__(self, path: Path, database: str = "meshloop") -> None:
        super().__init__(database)
        global _open_path
        from chdb import session as chdb_session

        self.path = Path(path)
        address = engine_address(self.path)
        with _open_lock:
            if _open_path is not None and _open_path != self.path:
                raise StoreError(
                    f"chdb already opened {_open_path} in this process; "
                    f"one process can own one embedded store (asked for {self.path})"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._session = chdb_session.Session(address)
            except Exception as exc:  # chdb raises plain RuntimeError subclasses
                raise translate_chdb_error(exc) from exc
            _open_path = self.path
        self._lock = threading.Lock()
        self._closed = False
        self._can_purge = True
        self._unreleased_rows = 0
        self._low_cardinality: dict[str, frozenset[str]] = {}
        self._run(f"CREATE DATABASE IF NOT EXISTS {self.database}", "TabSeparated", None)

    # -- raw access, used by the HTTP interface ---------------------------------------
    def execute(self, sql: str, fmt: str = "TabSeparated", params: Params = None) -> bytes:
        """Run one statement and return its result serialized in ``fmt``.

        A ``FORMAT`` clause inside ``sql`` wins over ``fmt``, as in ClickHouse.
        """
        return self._timed("query", self._run, sql, fmt, params)

    def insert_raw(self, insert_sql: str, fmt: str, data: bytes) -> int:
        """Stream ``data`` (already in ``fmt``) into ``INSERT INTO t [(cols)]``.

        Returns the number of rows written.
        """
        return self._timed("insert", self._insert_stream, insert_sql, fmt, data)

    def open_connection(self) -> Any:
        """A new chdb connection to this store's path; the caller closes it.

        Its current database and settings (``USE``, ``SET``) are its own and never reach
        this store's session or other connections, and its statements run in parallel
        with theirs. The ClickHouse HTTP interface opens one per request to isolate them.
        """
        import chdb

        self._check_open()
        try:
            return chdb.connect(str(self.path))
        except Exception as exc:
            raise translate_chdb_error(exc) from exc

    # -- primitives -------------------------------------------------------------------
    def _run(self, sql: str, fmt: str, params: Params) -> bytes:
        with self._lock:
            self._check_open()
            try:
                result = self._session.query(sql, fmt, params=dict(params) if params else None)
            except Exception as exc:
                raise translate_chdb_error(exc) from exc
        return result.bytes() if result is not None else b""

    def _insert_stream(self, insert_sql: str, fmt: str, data: bytes) -> int:
        with self._lock:
            self._check_open()
            try:
                with self._session.send_insert(insert_sql, fmt) as inserter:
                    inserter.append(data)
                    written = inserter.finish()
            except Exception as exc:
                raise translate_chdb_error(exc) from exc
        return int(getattr(written, "rows_written", 0) or 0)

    def _command(self, sql: str, params: Params) -> None:
        self._run(sql, "TabSeparated", params)

    def _query_arrow(self, sql: str, params: Params) -> pa.Table:
        with self._lock:
            self._check_open()
            try:
                return self._session.query(sql, "ArrowTable", params=dict(params) if params else None)
            except Exception as exc:
                raise translate_chdb_error(exc) from exc

    def _insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None:
        self._insert_encoded(table, self._encode(table, data), settings)

    def _encode(self, table: str, data: pa.Table) -> _NativeInsert | pa.Table:
        """A ClickHouse Native block (in parts) when every column type allows it, else the
        Arrow table, for chdb's ``Python()`` table function. The block is cheaper: an
        ``access_logs`` insert costs 0.21 instead of 0.31 CPU-s per 100k rows
        (:mod:`meshloop.store.native_format`)."""
        block = native_block_parts(data, self._low_cardinality_columns(table))
        return data if block is None else _NativeInsert(_column_list(data), data.num_rows, block)

    def _insert_encoded(
        self, table: str, payload: _NativeInsert | pa.Table, settings: Mapping[str, Any]
    ) -> None:
        if isinstance(payload, pa.Table):
            self._insert_through_python(table, payload, settings)
            return
        insert_sql = f"INSERT INTO {table} ({payload.columns}){_settings_clause(settings)}"
        with self._lock:
            self._check_open()
            try:
                with self._session.send_insert(insert_sql, "Native") as inserter:
                    for part in payload.parts:
                        inserter.append(part)
                    inserter.finish()
            except Exception as exc:
                raise translate_chdb_error(exc) from exc
            self._unreleased_rows += payload.rows

    def _low_cardinality_columns(self, table: str) -> frozenset[str]:
        """The ``LowCardinality(String)`` columns of ``table`` (``database.name``), read
        once per table. Only a hint for the Native block: a column declared
        LowCardinality that the table stores otherwise is converted by ClickHouse."""
        columns = self._low_cardinality.get(table)
        if columns is None:
            database, name = table.split(".", 1)
            try:
                rows = self._run(
                    "SELECT name, type FROM system.columns WHERE database = {database:String} "
                    "AND table = {name:String}",
                    "TabSeparated",
                    {"database": database, "name": name},
                )
            except StoreError:  # closed meanwhile: no hint (the insert itself will say why)
                return frozenset()
            typed = [line.split("\t", 1) for line in rows.decode().splitlines()]
            columns = frozenset(column for column, type_ in typed if type_ == "LowCardinality(String)")
            if typed:  # the table exists: its types are known (else ask again next time)
                self._low_cardinality[table] = columns
        return columns

    def _insert_through_python(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None:
        """``INSERT … SELECT`` from chdb's ``Python()`` table function over ``data``."""
        columns = _column_list(data)
        # chdb's Python() table function reads the local variable ``arrow_batch``
        # (https://clickhouse.com/docs/chdb/guides/query-remote-clickhouse#python).
        arrow_batch = data  # noqa: F841 - read by name inside ClickHouse
        sql = f"INSERT INTO {table} ({columns}){_settings_clause(settings)}"
        sql += f" SELECT {columns} FROM Python(arrow_batch)"
        with self._lock:
            self._check_open()
            try:
                self._session.query(sql, "TabSeparated")
            except Exception as exc:
                raise translate_chdb_error(exc) from exc
            self._unreleased_rows += data.num_rows

    def release_memory(self) -> None:
        """Hand the memory freed by the inserts since the last call back to the OS
        (``SYSTEM JEMALLOC PURGE``), once they add up to :data:`PURGE_AFTER_ROWS`."""
        with self._lock:
            if self._closed or self._unreleased_rows < PURGE_AFTER_ROWS:
                return
            self._unreleased_rows = 0
            self._purge_memory_locked()

    def _purge_memory_locked(self) -> None:
        """``SYSTEM JEMALLOC PURGE``; skipped from then on if this chdb build lacks it."""
        if not self._can_purge:
            return
        try:
            self._session.query("SYSTEM JEMALLOC PURGE", "TabSeparated")
        except Exception:  # a build without jemalloc: nothing to purge
            self._can_purge = False

    def _close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the embedded store is closed")


def _column_list(data: pa.Table) -> str:
    return ", ".join(f"`{name}`" for name in data.column_names)


def _settings_clause(settings: Mapping[str, Any]) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(f"{key} = {_setting_literal(value)}" for key, value in settings.items())


def _setting_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]*", text):
        raise ValueError(f"setting value {text!r} has characters outside [A-Za-z0-9_.:-]")
    return f"'{text}'"
