"""The store interface shared by both backends, with its Prometheus instrumentation.

Backends implement four primitives (``_command``, ``_query_arrow``, ``_insert_arrow``,
``_close``); this class adds metrics, error translation and the polars conveniences,
so both backends count and time their work the same way. A backend that encodes its
inserts (the embedded store writes ClickHouse ``Native`` blocks) also overrides
``_encode`` and ``_insert_encoded``, so that :meth:`Store.prepare_insert` can do that
work on another thread than the insert.

SQL values never come from string building: pass them as ClickHouse query parameters
(``{name:Type}`` placeholders, see
https://clickhouse.com/docs/en/interfaces/cli#cli-queries-with-parameters), which both
chdb and clickhouse-connect bind server-side.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
from prometheus_client import Counter, Histogram

from meshloop.errors import StoreError

if TYPE_CHECKING:
    from meshloop.config import Settings

STORE_QUERIES = Counter(
    "meshloop_store_queries_total",
    "Statements sent to the store, by backend and kind (command, query, insert).",
    ["backend", "kind"],
)
STORE_ERRORS = Counter(
    "meshloop_store_errors_total",
    "Statements the store answered with an error, by backend and kind.",
    ["backend", "kind"],
)
STORE_LATENCY = Histogram(
    "meshloop_store_duration_seconds",
    "Time to run one statement against the store, by backend and kind.",
    ["backend", "kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_INSERTED_ROWS = Counter(
    "meshloop_store_inserted_rows_total",
    "Rows inserted into the store, by backend and table.",
    ["backend", "table"],
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEDUP_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

Params = Mapping[str, Any] | None


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``.

    Database, table and cluster names come from configuration, not the wire, but they
    are still checked before they are placed in DDL.
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


@dataclass(frozen=True)
class PreparedInsert:
    """Rows converted and encoded for one backend's insert (:meth:`Store.prepare_insert`)."""

    table: str  # as the caller named it (the metrics' label)
    qualified: str  # database.table
    rows: int
    payload: Any  # what the backend's ``_insert_encoded`` takes


class Store(ABC):
    """A ClickHouse database reached through one backend.

    All methods are synchronous and safe to call from several threads; async code calls
    them through ``asyncio.to_thread``. ``database`` is the database meshloop's tables
    live in; statements may still name other databases explicitly.
    """

    backend: str = "abstract"
    arrow_compat: pl.CompatLevel = pl.CompatLevel.oldest()
    """The Arrow flavour ``insert_df`` hands the backend: the oldest (``large_string``)
    reads everywhere; a backend that reads ``string_view`` saves polars a copy."""

    def __init__(self, database: str) -> None:
        self.database = check_identifier(database, "database")

    # -- primitives each backend implements -------------------------------------------
    @abstractmethod
    def _command(self, sql: str, params: Params) -> None: ...

    @abstractmethod
    def _query_arrow(self, sql: str, params: Params) -> pa.Table: ...

    @abstractmethod
    def _insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    # -- public API ---------------------------------------------------------------------
    def command(self, sql: str, params: Params = None) -> None:
        """Run a statement that returns no rows (DDL, ``INSERT ... SELECT``, ``SET``)."""
        self._timed("command", self._command, sql, params)

    def query_arrow(self, sql: str, params: Params = None) -> pa.Table:
        """Run a query and return its result as an Arrow table."""
        return self._timed("query", self._query_arrow, sql, params)

    def query_df(self, sql: str, params: Params = None) -> pl.DataFrame:
        """Run a query and return its result as a polars DataFrame."""
        result = pl.from_arrow(self.query_arrow(sql, params))
        assert isinstance(result, pl.DataFrame)
        return result

    def query_rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run a small query and return its rows as tuples (for metadata, not data)."""
        return self.query_df(sql, params).rows()

    def insert_df(self, table: str, df: pl.DataFrame | pa.Table, *, dedup_token: str | None = None) -> int:
        """Insert a DataFrame (or Arrow table) into ``table``; return the row count.

        Columns are matched by name. ``dedup_token`` makes the insert idempotent:
        ClickHouse drops a block whose token it has seen within the table's
        deduplication window (``insert_deduplication_token``), so replaying a batch
        never duplicates rows.
        """
        return self.insert_prepared(self.prepare_insert(table, df), dedup_token=dedup_token)

    def prepare_insert(self, table: str, df: pl.DataFrame | pa.Table) -> PreparedInsert:
        """The part of :meth:`insert_df` that does not need the store: converting the rows
        and encoding them for the backend. A pipeline prepares the next batch while the
        store inserts the current one; :meth:`insert_prepared` finishes (and may repeat)."""
        arrow = df.to_arrow(compat_level=self.arrow_compat) if isinstance(df, pl.DataFrame) else df
        data = as_clickhouse_arrow(arrow)
        qualified = self.qualified(table)
        payload = self._encode(qualified, data) if data.num_rows else None
        return PreparedInsert(table, qualified, data.num_rows, payload)

    def insert_prepared(self, prepared: PreparedInsert, *, dedup_token: str | None = None) -> int:
        """Insert what :meth:`prepare_insert` made (as :meth:`insert_df`); return the rows."""
        if prepared.rows == 0:
            return 0
        settings: dict[str, Any] = {}
        if dedup_token is not None:
            if not _DEDUP_TOKEN.match(dedup_token):
                raise ValueError(f"dedup token {dedup_token!r} must match {_DEDUP_TOKEN.pattern}")
            settings["insert_deduplication_token"] = dedup_token
        self._timed("insert", self._insert_encoded, prepared.qualified, prepared.payload, settings)
        STORE_INSERTED_ROWS.labels(self.backend, prepared.table).inc(prepared.rows)
        return prepared.rows

    def _encode(self, table: str, data: pa.Table) -> Any:
        """``data`` as this backend's insert takes it (by default, Arrow as it is)."""
        return data

    def _insert_encoded(self, table: str, payload: Any, settings: Mapping[str, Any]) -> None:
        """Insert what :meth:`_encode` returned (by default, through ``_insert_arrow``)."""
        self._insert_arrow(table, payload, settings)

    def release_memory(self) -> None:
        """Give memory that past inserts freed back to the OS, if the backend keeps it.

        Writers with a steady stream of inserts call this when they go idle rather than
        after every insert: memory kept is memory the next insert need not fault in.
        Only the embedded backend keeps any (chdb's jemalloc); a server has nothing here.
        """
        return None  # nothing kept: a backend that keeps memory overrides this

    def qualified(self, table: str) -> str:
        """``database.table`` for a bare table name; a dotted name is kept."""
        if "." in table:
            db, name = table.split(".", 1)
            return f"{check_identifier(db, 'database')}.{check_identifier(name, 'table')}"
        return f"{self.database}.{check_identifier(table, 'table')}"

    def close(self) -> None:
        """Flush and release the backend; further calls fail."""
        self._close()

    def _timed(self, kind: str, fn: Any, *args: Any) -> Any:
        STORE_QUERIES.labels(self.backend, kind).inc()
        start = time.perf_counter()
        try:
            return fn(*args)
        except StoreError:
            STORE_ERRORS.labels(self.backend, kind).inc()
            raise
        finally:
            STORE_LATENCY.labels(self.backend, kind).observe(time.perf_counter() - start)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _is_key_value_list(kind: pa.DataType) -> bool:
    if not _is_list(kind):
        return False
    item = kind.value_type
    return pa.types.is_struct(item) and [f.name for f in item] == ["key", "value"]


def _needs_maps(kind: pa.DataType) -> bool:
    return _is_key_value_list(kind) or (_is_list(kind) and _needs_maps(kind.value_type))


def _with_maps(array: pa.Array) -> pa.Array:
    """``array`` with every list of ``{key, value}`` structs, at any depth, as an Arrow map."""
    kind = array.type
    if _is_key_value_list(kind):
        lists = array.cast(pa.list_(kind.value_type))
        entries = lists.values
        return pa.MapArray.from_arrays(lists.offsets, entries.field("key"), entries.field("value"))
    lists = array.cast(pa.large_list(kind.value_type))
    return pa.LargeListArray.from_arrays(lists.offsets, _with_maps(lists.values))


def as_clickhouse_arrow(table: pa.Table) -> pa.Table:
    """Arrow as ClickHouse expects it: polars has no map type, so a ``List(Struct{key,
    value})`` column becomes an Arrow ``map`` (ClickHouse ``Map``) — also inside lists,
    for Nested columns such as ``Events.Attributes`` (``Array(Map(...))``)."""
    for index, field_ in enumerate(table.schema):
        if _needs_maps(field_.type):
            column = pa.chunked_array([_with_maps(chunk) for chunk in table.column(index).chunks])
            table = table.set_column(index, field_.name, column)
    return table


def open_store(settings: Settings) -> Store:
    """Open the backend the settings choose: a server URL, else the embedded chdb."""
    if settings.clickhouse_url:
        from meshloop.store.server import ServerStore

        return ServerStore(settings.clickhouse_url, database=settings.database)
    from meshloop.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.data_dir / "clickhouse", database=settings.database)
