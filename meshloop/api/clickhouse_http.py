"""ClickHouse's HTTP interface over the embedded store, for clickhouse-connect, Grafana, curl.

Implements the subset of https://clickhouse.com/docs/en/interfaces/http those clients
use: queries in ``?query=`` and/or the body, ``INSERT ... FORMAT x`` with data in the
body (any input format), ``database``/``default_format``/``query_id``/``param_*``
parameters, other parameters as settings, compressed request bodies (gzip, deflate,
lz4, zstd) and responses (``enable_http_compression=1``), ClickHouse's error bodies,
headers and status codes, ``/ping``.

Every request runs on its own chdb connection (:meth:`EmbeddedStore.open_connection`),
so its ``USE``, URL settings and ``SET`` statements end with it, in a worker thread so
the event loop (and ``/ping``) stay responsive. Sessions (``session_id``) are accepted
and ignored: each request is a fresh session. Results are buffered, as with
``wait_end_of_query=1``; a request body is held in memory (bounded by
``max_body_bytes``) and decompressed in chunks into a streaming insert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from meshloop.api.clickhouse_protocol import (
    QUERY_IS_TOO_LARGE,
    STD_EXCEPTION,
    SYNTAX_ERROR,
    ClickHouseAuth,
    ClickHouseUser,
    ProtocolError,
    RequestParams,
    choose_encoding,
    clean_engine_message,
    content_type,
    credentials,
    format_exception_text,
    http_status,
    insert_shape,
    output_format,
    parse_params,
    quote_identifier,
    set_statement,
    statement_kind,
)
from meshloop.api.http import start_site
from meshloop.api.http_compression import ENCODINGS, compress, decoded
from meshloop.config import Settings
from meshloop.errors import StoreError
from meshloop.store.embedded import EmbeddedStore, translate_chdb_error

__all__ = [
    "ClickHouseAuth",
    "ClickHouseUser",
    "build_clickhouse_app",
    "start_clickhouse_http",
]

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "meshloop_clickhouse_http_requests_total",
    "Requests to the ClickHouse HTTP interface, by HTTP status.",
    ["status"],
)
HTTP_ERRORS = Counter(
    "meshloop_clickhouse_http_errors_total",
    "Requests the ClickHouse HTTP interface answered with an error, by kind "
    "(auth, clickhouse, request, internal).",
    ["kind"],
)
HTTP_INSERTED_ROWS = Counter(
    "meshloop_clickhouse_http_inserted_rows_total",
    "Rows inserted through the ClickHouse HTTP interface.",
)

_HEAD = 1 << 20  # an INSERT statement must fit in the first MiB of the query text
_RESULT_KINDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "VALUES"}
)


@dataclass
class _State:
    store: EmbeddedStore
    auth: ClickHouseAuth
    display_name: str
    timezone: str | None = None
    compress_by_default: bool = False


_APP_STATE = web.AppKey("clickhouse_http_state", _State)


@dataclass
class _Request:
    """What the thread needs: parsed parameters, the raw body and how it is encoded."""

    params: RequestParams
    user: ClickHouseUser
    method: str
    body: bytes
    encoding: str | None


@dataclass
class _Result:
    body: bytes = b""
    fmt: str | None = None
    summary: dict[str, str] = field(default_factory=dict)
    timezone: str | None = None


# -- application ------------------------------------------------------------------------
def build_clickhouse_app(
    store: EmbeddedStore,
    auth: ClickHouseAuth | None = None,
    *,
    max_body_bytes: int = 4 << 30,
) -> web.Application:
    """The aiohttp application serving ClickHouse's HTTP interface over ``store``.

    Run it with ``auto_decompress=False`` (as :func:`start_clickhouse_http` does): the
    handler decodes ``Content-Encoding`` itself, including lz4 and zstd.
    """
    app = web.Application(client_max_size=max_body_bytes)
    app[_APP_STATE] = _State(store, auth or ClickHouseAuth(), socket.gethostname())
    app.router.add_get("/ping", _ok)
    app.router.add_get("/replicas_status", _ok)
    app.router.add_route("GET", "/", _handle)
    app.router.add_route("POST", "/", _handle)
    return app


async def start_clickhouse_http(
    store: EmbeddedStore,
    auth: ClickHouseAuth | None = None,
    host: str = "127.0.0.1",
    port: int = 8123,
) -> tuple[web.AppRunner, int]:
    """Serve the interface on ``host:port`` (0 picks a free port).

    Returns the runner (``await runner.cleanup()`` stops it) and the bound port. The
    handler decodes ``Content-Encoding`` itself, so aiohttp's own decompression is off.
    """
    return await start_site(
        build_clickhouse_app(store, auth),
        host,
        port,
        what="ClickHouse HTTP interface",
        flag="--clickhouse-http-port",
        auto_decompress=False,
    )


def auth_from_settings(settings: Settings) -> ClickHouseAuth:
    """Users of the interface: ``default`` (password optional) and, when a password
    for it is set, a read-only ``readonly`` user for dashboards."""
    users = {"default": ClickHouseUser(password=settings.clickhouse_password)}
    if settings.clickhouse_readonly_password:
        users["readonly"] = ClickHouseUser(password=settings.clickhouse_readonly_password, readonly=True)
    return ClickHouseAuth(users=users)


async def _ok(request: web.Request) -> web.Response:
    HTTP_REQUESTS.labels("200").inc()
    return web.Response(text="Ok.\n", content_type="text/html")


async def _handle(request: web.Request) -> web.Response:
    state = request.app[_APP_STATE]
    query_id = request.query.get("query_id") or str(uuid.uuid4())
    try:
        response = await _serve(request, state, query_id)
    except ProtocolError as exc:
        HTTP_ERRORS.labels("auth" if http_status(exc.code) in (401, 403) else "request").inc()
        response = _error(state, query_id, exc.code, exc.clickhouse_text())
    except StoreError as exc:
        HTTP_ERRORS.labels("clickhouse").inc()
        response = _error(state, query_id, exc.code, clean_engine_message(str(exc)))
    except Exception as exc:  # the interface's top: never a traceback to the client
        log.exception("ClickHouse HTTP interface: unexpected error (query_id %s)", query_id)
        HTTP_ERRORS.labels("internal").inc()
        text = format_exception_text(STD_EXCEPTION, f"{type(exc).__name__}: {exc}")
        response = _error(state, query_id, STD_EXCEPTION, text)
    HTTP_REQUESTS.labels(str(response.status)).inc()
    return response


async def _serve(request: web.Request, state: _State, query_id: str) -> web.Response:
    if request.method == "GET" and "query" not in request.query:
        return web.Response(text="Ok.\n", content_type="text/html")
    items = list(request.query.items())
    body = b""
    if request.method == "POST":
        if request.content_type == "multipart/form-data":
            items += await _form_items(request)
        else:
            body = await _read_body(request)
    params = parse_params(items)
    user, password = credentials(request.headers, request.query)
    account = state.auth.authenticate(user, password)
    encoding = request.headers.get("Content-Encoding", "").strip().lower() or None
    job = _Request(params, account, request.method, body, encoding)
    result = await asyncio.to_thread(_execute, state, job)
    return await _response(request, state, query_id, params, result)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ProtocolError(QUERY_IS_TOO_LARGE, f"Request body is too large: {exc.text}") from None


async def _form_items(request: web.Request) -> list[tuple[str, str]]:
    """Text fields of a multipart form (query, param_*), as clickhouse-connect sends
    long bound parameters; external-data file fields are not supported."""
    items: list[tuple[str, str]] = []
    form = await request.post()
    for key, value in form.items():
        if not isinstance(value, str):
            raise ProtocolError(48, "external data (file parts of a form) is not supported")
        items.append((key, value))
    return items


async def _response(
    request: web.Request, state: _State, query_id: str, params: RequestParams, result: _Result
) -> web.Response:
    headers = _common_headers(state, query_id, result.timezone)
    headers["X-ClickHouse-Summary"] = json.dumps(result.summary)
    body = result.body
    if result.fmt is not None:
        headers["X-ClickHouse-Format"] = result.fmt
        headers["Content-Type"] = content_type(result.fmt)
    else:
        headers["Content-Type"] = "text/plain; charset=UTF-8"
    asked = params.setting("enable_http_compression")
    enabled = state.compress_by_default if asked is None else asked.lower() in ("1", "true")
    encoding = choose_encoding(request.headers.get("Accept-Encoding", ""), ENCODINGS)
    if enabled and encoding and body:
        body = await asyncio.to_thread(compress, body, encoding)
        headers["Content-Encoding"] = encoding
    return web.Response(body=body, headers=headers)


def _common_headers(state: _State, query_id: str, timezone: str | None) -> dict[str, str]:
    headers = {
        "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Server-Display-Name": state.display_name,
    }
    if timezone or state.timezone:
        headers["X-ClickHouse-Timezone"] = timezone or state.timezone or "UTC"
    return headers


def _error(state: _State, query_id: str, code: int | None, text: str) -> web.Response:
    code = code or STD_EXCEPTION
    headers = _common_headers(state, query_id, None)
    headers["X-ClickHouse-Exception-Code"] = str(code)
    headers["Content-Type"] = "text/plain; charset=UTF-8"
    return web.Response(status=http_status(code), text=text.rstrip("\n") + "\n", headers=headers)


# -- the worker thread ------------------------------------------------------------------
def _execute(state: _State, job: _Request) -> _Result:
    """Run one request on a fresh chdb connection (in a worker thread)."""
    chunks = decoded(job.body, job.encoding)
    conn = state.store.open_connection()
    try:
        _prepare(conn, job)
        if state.timezone is None:
            server_tz, compression = _query_text(
                conn, "SELECT timezone(), getSetting('enable_http_compression')"
            ).split("\t")
            state.compress_by_default = compression in ("1", "true")
            state.timezone = server_tz
        timezone: str | None = None
        if job.params.setting("session_timezone") is not None:
            timezone = _query_text(conn, "SELECT timezone()")
        result = _run_statement(conn, job, chunks)
        result.timezone = timezone
        return result
    finally:
        conn.close()


def _prepare(conn: Any, job: _Request) -> None:
    """Apply the request's database, settings and readonly mode to its connection.

    GET requests and readonly users get ``readonly=2`` (writes refused with 164), unless
    the request asked for the stricter ``readonly=1`` itself.
    """
    if job.params.database:
        _run(conn, f"USE {quote_identifier(job.params.database)}")
    settings = job.params.settings
    statement = set_statement(settings)
    if statement:
        _run(conn, statement)
    if (job.user.readonly or job.method == "GET") and job.params.setting("readonly") not in (
        "1",
        "2",
    ):
        _run(conn, "SET readonly = 2")


def _run_statement(conn: Any, job: _Request, chunks: Iterator[bytes]) -> _Result:
    params = job.params
    if params.query:
        shape = insert_shape(params.query)
        if shape is not None and shape.data_offset == len(params.query):
            return _insert(conn, shape.statement, shape.fmt, chunks)
        text_chunks: Iterable[bytes] = _prefixed(params.query.encode(), _after_newline(chunks))
    else:
        text_chunks = chunks
    head, rest = _head(iter(text_chunks))
    head_text = head[:_HEAD].decode("latin-1")
    shape = insert_shape(head_text)
    if shape is not None:
        statement = head[: len(shape.statement.encode("latin-1"))].decode("utf-8")
        data = _prefixed(head[shape.data_offset :], rest)
        return _insert(conn, statement, shape.fmt, data)
    try:
        sql = (head + b"".join(rest)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(SYNTAX_ERROR, f"Query is not valid UTF-8: {exc}") from None
    if not sql.strip():
        raise ProtocolError(SYNTAX_ERROR, "Empty query")
    return _query(conn, sql, params)


def _query(conn: Any, sql: str, params: RequestParams) -> _Result:
    start = time.perf_counter_ns()
    try:
        res = conn.query(sql, params.default_format, params=dict(params.bind) or None)
    except Exception as exc:
        raise translate_chdb_error(exc) from exc
    body = res.bytes() if res is not None else b""
    has_result = statement_kind(sql) in _RESULT_KINDS
    summary = _summary(
        read_rows=_stat(res, "rows_read"),
        read_bytes=_stat(res, "bytes_read"),
        written_rows=_stat(res, "rows_written"),
        written_bytes=_stat(res, "bytes_written"),
        result_bytes=len(body),
        elapsed_ns=time.perf_counter_ns() - start,
    )
    fmt = (output_format(sql) or params.default_format) if has_result else None
    return _Result(body=body, fmt=fmt, summary=summary)


def _insert(conn: Any, statement: str, fmt: str, data: Iterable[bytes]) -> _Result:
    start = time.perf_counter_ns()
    try:
        with conn.send_insert(statement, fmt) as inserter:
            for chunk in data:
                if chunk:
                    inserter.append(chunk)
            written = inserter.finish()
    except (ProtocolError, StoreError):
        raise
    except Exception as exc:
        raise translate_chdb_error(exc) from exc
    rows = int(getattr(written, "rows_written", 0) or 0)
    HTTP_INSERTED_ROWS.inc(rows)
    summary = _summary(
        written_rows=rows,
        written_bytes=int(getattr(written, "bytes_written", 0) or 0),
        elapsed_ns=time.perf_counter_ns() - start,
    )
    return _Result(summary=summary)


def _summary(**values: int) -> dict[str, str]:
    """``X-ClickHouse-Summary``: every counter ClickHouse reports, as strings."""
    keys = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
            "result_rows", "result_bytes", "elapsed_ns")
    return {key: str(values.get(key, 0)) for key in keys}


def _stat(res: Any, name: str) -> int:
    value = getattr(res, name, 0)
    try:
        return int(value() if callable(value) else value)
    except (TypeError, ValueError):
        return 0


def _run(conn: Any, sql: str) -> None:
    try:
        conn.query(sql, "TabSeparated")
    except Exception as exc:
        raise translate_chdb_error(exc) from exc


def _query_text(conn: Any, sql: str) -> str:
    try:
        return conn.query(sql, "TabSeparated").bytes().decode().strip()
    except Exception as exc:
        raise translate_chdb_error(exc) from exc


def _head(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """At least ``_HEAD`` bytes (or everything) from the start of ``chunks``, and the rest."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= _HEAD:
            break
    return b"".join(parts), chunks


def _after_newline(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The body appended to the ``query`` parameter: a newline, then the body (if any)."""
    for chunk in chunks:
        if chunk:
            yield b"\n"
            yield chunk
            yield from chunks
            return


def _prefixed(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
