"""The ClickHouse HTTP interface of the embedded store, over real HTTP.

One EmbeddedStore for the module (chdb opens one data path per process); each test
uses its own database. The server runs on its own event loop in a thread, because
clickhouse-connect and urllib block.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import clickhouse_connect
import lz4.frame
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from meshloop.api.clickhouse_http import ClickHouseAuth, ClickHouseUser, start_clickhouse_http
from meshloop.store.embedded import EmbeddedStore

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

pytestmark = pytest.mark.integration

AUTH = ClickHouseAuth(
    {
        "default": ClickHouseUser(),
        "alice": ClickHouseUser(password="s3cret"),
        "viewer": ClickHouseUser(readonly=True),
    }
)


@dataclass
class Server:
    store: EmbeddedStore
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def client(self, **kwargs):
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.port, **kwargs)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(
    server: Server,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = "",
) -> Reply:
    url = server.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


@pytest.fixture(scope="module")
def server(chdb_path) -> Iterator[Server]:
    store = EmbeddedStore(chdb_path, database="meshloop")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, port = asyncio.run_coroutine_threadsafe(
        start_clickhouse_http(store, AUTH, "127.0.0.1", 0), loop
    ).result(30)
    yield Server(store, port)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    store.close()


@pytest.fixture
def db(server: Server, request) -> str:
    name = "t_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60]
    server.store.command(f"DROP DATABASE IF EXISTS {name}")
    server.store.command(f"CREATE DATABASE {name}")
    return name


def test_ping_root_and_replicas_status(server):
    for path in ("ping", "", "replicas_status"):
        reply = request(server, path=path)
        assert (reply.status, reply.body) == (200, b"Ok.\n")


def test_curl_syntax_error_is_clickhouse_error(server):
    out = subprocess.run(
        ["curl", "-sS", "-i", "--data-binary", "SELEC 1", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    head, _, body = out.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 400")  # ClickHouse maps SYNTAX_ERROR to 400
    assert "X-ClickHouse-Exception-Code: 62" in head
    assert body.startswith("Code: 62. DB::Exception: Syntax error")
    assert "(SYNTAX_ERROR)" in body and "Traceback" not in body


def test_clickhouse_connect_round_trip(server, db):
    client = server.client(database=db)
    client.command("CREATE TABLE t (id UInt64, name String, v Float64) ENGINE = MergeTree ORDER BY id")
    client.insert("t", [[1, "a", 0.5], [2, "b", 1.5]], column_names=["id", "name", "v"])
    assert client.command("SELECT count() FROM t") == 2
    assert client.query("SELECT id, name FROM t ORDER BY id").result_rows == [(1, "a"), (2, "b")]
    df = client.query_df("SELECT * FROM t ORDER BY id")
    assert list(df["name"]) == ["a", "b"]
    table = client.query_arrow("SELECT * FROM t ORDER BY id")
    assert table.column("v").to_pylist() == [0.5, 1.5]
    summary = client.command("INSERT INTO t SELECT number + 10, 'c', 1 FROM numbers(3)")
    assert summary.written_rows == 3


def test_clickhouse_connect_million_rows(server, db):
    client = server.client(database=db)
    client.command("CREATE TABLE big (id UInt64, v Float64, tag String) ENGINE = MergeTree ORDER BY id")
    n = 1_000_000
    ids = np.arange(n, dtype=np.uint64)
    start = time.perf_counter()
    client.insert_df("big", pd.DataFrame({"id": ids, "v": ids * 0.5, "tag": ["df"] * n}))
    df_seconds = time.perf_counter() - start
    start = time.perf_counter()
    client.insert_arrow(
        "big", pa.table({"id": ids + n, "v": (ids + n) * 0.5, "tag": pa.array(["arrow"] * n)})
    )
    arrow_seconds = time.perf_counter() - start
    rows = client.query("SELECT tag, count(), sum(id), sum(v) FROM big GROUP BY tag ORDER BY tag").result_rows
    total = n * (n - 1) // 2
    assert rows == [("arrow", n, total + n * n, (total + n * n) * 0.5), ("df", n, total, total * 0.5)]
    back = client.query_arrow("SELECT id FROM big WHERE tag = 'df' ORDER BY id")
    assert back.num_rows == n and back.column("id")[-1].as_py() == n - 1
    print(f"1M rows: insert_df {df_seconds:.2f}s, insert_arrow {arrow_seconds:.2f}s")


def test_query_parameters(server):
    client = server.client()
    result = client.query("SELECT {x:UInt32} + 1, {s:String}", parameters={"x": 41, "s": "it's"})
    assert result.result_rows == [(42, "it's")]
    reply = request(server, {"query": "SELECT {a:Array(UInt8)}", "param_a": "[1,2]"})
    assert (reply.status, reply.body) == (200, b"[1,2]\n")
    form_client = server.client(form_encode_query_params=True)  # multipart/form-data body
    assert form_client.query("SELECT {s:String}", parameters={"s": "form"}).result_rows == [("form",)]


def test_password_auth(server):
    with pytest.raises(DatabaseError) as info:
        server.client(username="alice", password="wrong")
    assert info.value.code == 516
    assert server.client(username="alice", password="s3cret").command("SELECT 7") == 7
    reply = request(server, {"query": "SELECT 1", "user": "alice", "password": "nope"})
    assert reply.status == 403
    assert reply.headers["X-ClickHouse-Exception-Code"] == "516"
    reply = request(
        server, {"query": "SELECT 1"}, headers={"X-ClickHouse-User": "alice", "X-ClickHouse-Key": "s3cret"}
    )
    assert (reply.status, reply.body) == (200, b"1\n")


def test_readonly_user_cannot_insert(server, db):
    server.store.command(f"CREATE TABLE {db}.t (a UInt8) ENGINE = MergeTree ORDER BY a")
    viewer = server.client(username="viewer", database=db)
    assert viewer.command("SELECT count() FROM t") == 0
    with pytest.raises(DatabaseError) as info:
        viewer.insert("t", [[1]], column_names=["a"])
    assert info.value.code == 164
    with pytest.raises(DatabaseError) as info:
        viewer.command("DROP TABLE t")
    assert info.value.code == 164
    assert server.client(database=db).command("SELECT count() FROM t") == 0


def test_get_is_read_only(server, db):
    reply = request(server, {"query": f"CREATE TABLE {db}.x (a UInt8) ENGINE = Memory"})
    assert reply.headers["X-ClickHouse-Exception-Code"] == "164"
    reply = request(server, {"query": f"CREATE TABLE {db}.x (a UInt8) ENGINE = Memory"}, b"")
    assert reply.status == 200


@pytest.mark.parametrize(
    ("fmt", "expected", "ctype"),
    [
        ("TabSeparated", b"1\ta\n2\tb\n", "text/tab-separated-values; charset=UTF-8"),
        ("CSV", b'1,"a"\n2,"b"\n', "text/csv; charset=UTF-8; header=absent"),
        ("JSONEachRow", b'{"n":1,"s":"a"}\n{"n":2,"s":"b"}\n', "application/json; charset=UTF-8"),
    ],
)
def test_text_formats(server, fmt, expected, ctype):
    sql = "SELECT number + 1 AS n, ['a', 'b'][n] AS s FROM numbers(2)"
    for params in ({"query": sql, "default_format": fmt}, {"query": f"{sql} FORMAT {fmt}"}):
        reply = request(server, params)
        assert reply.status == 200 and reply.body == expected
        assert reply.headers["X-ClickHouse-Format"] == fmt
        assert reply.headers["Content-Type"] == ctype
        summary = json.loads(reply.headers["X-ClickHouse-Summary"])
        assert summary["read_rows"] == "2" and all(isinstance(v, str) for v in summary.values())
        assert reply.headers["X-ClickHouse-Timezone"]
        assert reply.headers["X-ClickHouse-Query-Id"]


def test_json_and_native_formats(server):
    reply = request(server, {"query": "SELECT 5 AS x FORMAT JSON", "query_id": "q-json"})
    assert json.loads(reply.body)["data"] == [{"x": 5}]
    assert reply.headers["X-ClickHouse-Query-Id"] == "q-json"
    reply = request(server, {"query": "SELECT toUInt8(5) AS x", "default_format": "Native"})
    assert reply.body == b"\x01\x01\x01x\x05UInt8\x05"
    assert reply.headers["Content-Type"] == "application/octet-stream"


def _encode(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "lz4":  # two frames, as clickhouse-connect sends one per block
        half = len(data) // 2
        return lz4.frame.compress(data[:half]) + lz4.frame.compress(data[half:])
    if encoding == "zstd":
        return zstd.compress(data)
    return data


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "lz4", "zstd"])
@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("TabSeparated", b"1\tx\n2\ty\n"),
        ("CSV", b'1,"x"\n2,"y"\n'),
        ("JSONEachRow", b'{"a":1,"s":"x"}\n{"a":2,"s":"y"}\n'),
    ],
)
def test_insert_formats_and_encodings(server, db, fmt, data, encoding):
    server.store.command(f"CREATE TABLE {db}.t (a UInt8, s String) ENGINE = MergeTree ORDER BY a")
    headers = {} if encoding == "identity" else {"Content-Encoding": encoding}
    # statement in the URL, data in the body
    reply = request(
        server, {"query": f"INSERT INTO t FORMAT {fmt}", "database": db}, _encode(data, encoding), headers
    )
    assert reply.status == 200, reply.body
    assert json.loads(reply.headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    # statement and data both in the body
    body = f"INSERT INTO {db}.t FORMAT {fmt}\n".encode() + data
    assert request(server, None, _encode(body, encoding), headers).status == 200
    reply = request(server, {"query": f"SELECT sum(a), groupArray(s) FROM {db}.t"})
    assert reply.body == b"6\t['x','y','x','y']\n"


def test_bad_insert_data_and_bad_encoding(server, db):
    server.store.command(f"CREATE TABLE {db}.t (a UInt8) ENGINE = MergeTree ORDER BY a")
    reply = request(server, {"query": f"INSERT INTO {db}.t FORMAT CSV"}, b"1\nnot-a-number\n")
    assert reply.status == 400 and reply.headers["X-ClickHouse-Exception-Code"] == "117"
    assert reply.body.startswith(b"Code: 117. DB::Exception") and b"(INCORRECT_DATA)" in reply.body
    reply = request(server, {"query": f"INSERT INTO {db}.t FORMAT CSV"}, b"1\n", {"Content-Encoding": "gzip"})
    assert reply.headers["X-ClickHouse-Exception-Code"] == "271"
    reply = request(server, {"query": "SELECT 1"}, b"", {"Content-Encoding": "snappy"})
    assert reply.headers["X-ClickHouse-Exception-Code"] == "89"


def test_settings_apply_per_request_only(server):
    sql = "SELECT number FROM numbers(10)"
    reply = request(server, {"query": sql, "max_result_rows": "2", "result_overflow_mode": "throw"})
    assert reply.headers["X-ClickHouse-Exception-Code"] == "396"  # TOO_MANY_ROWS_OR_BYTES
    assert request(server, {"query": sql}).body.count(b"\n") == 10
    reply = request(server, {"query": "SELECT 1", "no_such_setting": "1"})
    assert (reply.status, reply.headers["X-ClickHouse-Exception-Code"]) == (404, "115")
    assert b"Unknown setting" in reply.body
    reply = request(server, {"query": "SELECT getSetting('max_threads')"}, b"", path="")
    assert request(server, {"query": "SET max_threads = 3"}, b"").status == 200
    assert request(server, {"query": "SELECT getSetting('max_threads')"}).body == reply.body


def test_database_param_and_query_split(server, db):
    server.store.command(f"CREATE TABLE {db}.t (a UInt8) ENGINE = MergeTree ORDER BY a")
    server.store.command(f"INSERT INTO {db}.t VALUES (3)")
    assert request(server, {"query": "SELECT a FROM t", "database": db}).body == b"3\n"
    # query parameter is the start of the query, the body its end
    assert request(server, {"query": "SELECT a"}, f"FROM {db}.t".encode()).body == b"3\n"
    assert request(server, {"query": "SELECT currentDatabase()"}).body == b"default\n"


def test_response_compression(server):
    sql = "SELECT number FROM numbers(1000)"
    expected = b"".join(b"%d\n" % i for i in range(1000))
    for encoding, decode in [
        ("gzip", gzip.decompress),
        ("lz4", lz4.frame.decompress),
        ("zstd", zstd.decompress),
        ("deflate", zlib.decompress),
    ]:
        reply = request(
            server, {"query": sql, "enable_http_compression": "1"}, headers={"Accept-Encoding": encoding}
        )
        assert reply.headers["Content-Encoding"] == encoding
        assert decode(reply.body) == expected
    reply = request(
        server, {"query": sql, "enable_http_compression": "0"}, headers={"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in reply.headers and reply.body == expected


def test_ping_answers_during_a_long_query(server):
    marker = "long_query_marker_1"
    sql = f"SELECT sleepEachRow(0.5), '{marker}' FROM numbers(4) SETTINGS max_block_size = 1"
    worker = threading.Thread(target=request, args=(server, {"query": sql}))
    worker.start()
    probe = (
        "SELECT count() FROM system.processes "
        f"WHERE query LIKE '%{marker}%' AND query NOT LIKE '%system.processes%'"
    )
    deadline = time.monotonic() + 10
    while request(server, {"query": probe}).body != b"1\n":
        assert time.monotonic() < deadline, "the long query never showed up in system.processes"
    assert request(server, path="ping").body == b"Ok.\n"
    assert worker.is_alive()  # the ping was answered while the query still ran
    worker.join(30)


def test_unexpected_error_is_std_exception(server, monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(server.store, "open_connection", broken)
    reply = request(server, {"query": "SELECT 1"})
    assert (reply.status, reply.headers["X-ClickHouse-Exception-Code"]) == (500, "1001")
    assert reply.body.startswith(b"Code: 1001. DB::Exception: RuntimeError: boom")


@pytest.mark.parametrize(
    "hostile",
    ["1', readonly = '0", "1\\', readonly = 0 --", "1'; DROP TABLE t; --", "1\\\\', readonly = '0"],
)
def test_setting_values_from_the_url_cannot_escape_readonly(server, db, hostile):
    """Settings from the URL become SET statements: their values must stay string literals."""
    server.store.command(f"CREATE TABLE IF NOT EXISTS {db}.t (a UInt8) ENGINE = MergeTree ORDER BY a")
    reply = request(server, {"query": f"INSERT INTO {db}.t VALUES (1)", "max_threads": hostile})
    assert reply.status != 200  # GET is read-only, and the value is no valid max_threads
    viewer = {"query": f"INSERT INTO {db}.t VALUES (1)", "max_threads": hostile, "user": "viewer"}
    assert request(server, viewer, b"").status != 200
    assert server.client(database=db).command("SELECT count() FROM t") == 0
