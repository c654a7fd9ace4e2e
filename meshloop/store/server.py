"""The server backend: a ClickHouse server through clickhouse-connect (HTTP).

The URL has the form ``http(s)://user:password@host:port/database``; the database in
the path, when present, wins over ``--database``. Sessions are off, so one client is
safe to share between threads (clickhouse-connect's HTTP pool handles concurrency).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from meshloop.errors import StoreError, StoreUnavailable
from meshloop.store.base import Params, Store

_CODE = re.compile(r"Code: (\d+)\.")


def database_from_url(url: str) -> str | None:
    """The database named in the URL's path, if any."""
    path = urlsplit(url).path.strip("/")
    return unquote(path) or None


def _translate(exc: Exception) -> StoreError:
    from clickhouse_connect.driver.exceptions import OperationalError

    message = str(exc).strip()
    if isinstance(exc, OperationalError) and "Code:" not in message:
        return StoreUnavailable(message)
    match = _CODE.search(message)
    return StoreError(message, int(match.group(1)) if match else None)


class ServerStore(Store):
    """A remote ClickHouse server reached with clickhouse-connect."""

    backend = "clickhouse"

    def __init__(self, url: str, database: str = "meshloop", connect_timeout: float = 5) -> None:
        super().__init__(database_from_url(url) or database)
        import clickhouse_connect

        parts = urlsplit(url)
        self.url_without_password = parts._replace(
            netloc=f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        ).geturl()
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=unquote(parts.username) if parts.username else "default",
                password=unquote(parts.password) if parts.password else "",
                secure=parts.scheme == "https",
                database="default",
                connect_timeout=connect_timeout,
                autogenerate_session_id=False,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        self._command(f"CREATE DATABASE IF NOT EXISTS {self.database}", None)

    def _command(self, sql: str, params: Params) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise _translate(exc) from exc

    def _query_arrow(self, sql: str, params: Params) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise _translate(exc) from exc

    def _insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any]) -> None:
        try:
            self._client.insert_arrow(table, data, settings=dict(settings) or None)
        except Exception as exc:
            raise _translate(exc) from exc

    def _close(self) -> None:
        self._client.close()
