"""The ClickHouse store: one interface, two real backends running the same SQL.

- :class:`~meshloop.store.embedded.EmbeddedStore` — chdb, ClickHouse as a library,
  persistent under the data dir (the default).
- :class:`~meshloop.store.server.ServerStore` — a ClickHouse server through
  clickhouse-connect (``--clickhouse-url``).

Both take and return polars DataFrames (Arrow underneath). Schema migrations live in
:mod:`meshloop.store.migrations`, the DDL in :mod:`meshloop.store.schema`.
"""

from meshloop.store.base import Store, open_store

__all__ = ["Store", "open_store"]
