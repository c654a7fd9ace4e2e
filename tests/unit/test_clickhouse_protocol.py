"""Pure parsing of the ClickHouse HTTP interface (meshloop.api.clickhouse_protocol)."""

from __future__ import annotations

import base64

import pytest

from meshloop.api.clickhouse_protocol import (
    ClickHouseAuth,
    ClickHouseUser,
    InsertShape,
    ProtocolError,
    choose_encoding,
    clean_engine_message,
    content_type,
    credentials,
    http_status,
    insert_shape,
    output_format,
    parse_params,
    quote_identifier,
    set_statement,
    statement_kind,
)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        ({}, {}, ("default", "")),
        ({"Authorization": _basic("alice", "p:w")}, {}, ("alice", "p:w")),
        ({"X-ClickHouse-User": "bob", "X-ClickHouse-Key": "k"}, {}, ("bob", "k")),
        ({}, {"user": "carol", "password": "pw"}, ("carol", "pw")),
        ({}, {"user": "carol"}, ("carol", "")),
    ],
)
def test_credentials_from_each_method(headers, params, expected):
    assert credentials(headers, params) == expected


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": _basic("a", "b")}, {"user": "a"}),
        ({"X-ClickHouse-User": "a"}, {"password": "b"}),
        ({"Authorization": "Bearer token"}, {}),
        ({"Authorization": "Basic !!!"}, {}),
    ],
)
def test_credentials_refuses_mixed_or_malformed(headers, params):
    with pytest.raises(ProtocolError) as info:
        credentials(headers, params)
    assert info.value.code == 516


def test_authenticate_checks_password_and_user():
    auth = ClickHouseAuth({"alice": ClickHouseUser("s3cret"), "open": ClickHouseUser()})
    assert auth.authenticate("alice", "s3cret").password == "s3cret"
    assert auth.authenticate("open", "anything").readonly is False
    for user, password in [("alice", "wrong"), ("alice", ""), ("nobody", "")]:
        with pytest.raises(ProtocolError) as info:
            auth.authenticate(user, password)
        assert info.value.code == 516
        assert "AUTHENTICATION_FAILED" in info.value.clickhouse_text()


def test_default_auth_is_default_user_without_password():
    assert ClickHouseAuth().authenticate("default", "") == ClickHouseUser()


def test_parse_params_splits_roles():
    params = parse_params(
        [
            ("query", "SELECT 1"),
            ("database", "db"),
            ("default_format", "JSON"),
            ("query_id", "q1"),
            ("session_id", "s"),
            ("wait_end_of_query", "1"),
            ("param_x", "5"),
            ("max_result_rows", "10"),
            ("readonly", "1"),
            ("max_result_rows", "20"),
        ]
    )
    assert params.query == "SELECT 1"
    assert (params.database, params.default_format, params.query_id) == ("db", "JSON", "q1")
    assert params.bind == {"x": "5"}
    assert params.settings == (("max_result_rows", "10"), ("readonly", "1"), ("max_result_rows", "20"))
    assert params.setting("max_result_rows") == "20"
    assert params.setting("absent") is None


def test_parse_params_defaults_and_refusals():
    assert parse_params([]).default_format == "TabSeparated"
    with pytest.raises(ProtocolError) as info:
        parse_params([("bad name;", "1")])
    assert info.value.code == 115
    with pytest.raises(ProtocolError) as info:
        parse_params([("compress", "1")])
    assert info.value.code == 48
    assert parse_params([("compress", "0")]).settings == ()


def test_set_statement_quotes_values():
    assert set_statement(()) is None
    assert set_statement((("a", "1"), ("b", "it's \\x"))) == "SET a = '1', b = 'it\\'s \\\\x'"
    assert quote_identifier("we`ird") == "`we\\`ird`"


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("select 1", "SELECT"),
        ("  -- comment\n/* c */ (SELECT 1)", "SELECT"),
        ("INSERT INTO t VALUES", "INSERT"),
        ("", ""),
    ],
)
def test_statement_kind(sql, kind):
    assert statement_kind(sql) == kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("INSERT INTO t FORMAT CSV\n1,2\n", InsertShape("INSERT INTO t", "CSV", 25)),
        ("INSERT INTO t (a, b) FORMAT Native", InsertShape("INSERT INTO t (a, b)", "Native", 34)),
        ("insert into t format TSV  \r\n\n1", InsertShape("insert into t", "TSV", 28)),
        (
            "INSERT INTO t SETTINGS x=1 FORMAT JSONEachRow {}",
            InsertShape("INSERT INTO t SETTINGS x=1", "JSONEachRow", 46),
        ),
        ("INSERT INTO t VALUES (1, 'FORMAT x')", InsertShape("INSERT INTO t", "Values", 20)),
        ("INSERT INTO `FORMAT` FORMAT CSV", InsertShape("INSERT INTO `FORMAT`", "CSV", 31)),
        ("INSERT INTO t SELECT 1 FORMAT CSV", None),
        ("INSERT INTO t (a) SELECT * FROM s", None),
        ("SELECT 1 FORMAT CSV", None),
    ],
)
def test_insert_shape(text, expected):
    assert insert_shape(text) == expected


def test_insert_shape_needs_a_format_name():
    with pytest.raises(ProtocolError) as info:
        insert_shape("INSERT INTO t FORMAT ")
    assert info.value.code == 62


@pytest.mark.parametrize(
    ("sql", "fmt"),
    [
        ("SELECT 1", None),
        ("SELECT 1 FORMAT JSON", "JSON"),
        ("SELECT 1 FORMAT JSON SETTINGS max_threads = 1", "JSON"),
        ("SELECT 'FORMAT CSV' -- FORMAT TSV", None),
        ("SELECT * FROM (SELECT 1 FORMAT CSV) FORMAT Native", "Native"),
    ],
)
def test_output_format(sql, fmt):
    assert output_format(sql) == fmt


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (62, 400),
        (27, 400),
        (60, 404),
        (115, 404),
        (516, 403),
        (194, 401),
        (164, 500),
        (48, 501),
        (1001, 500),
        (None, 500),
    ],
)
def test_http_status_follows_clickhouse(code, status):
    assert http_status(code) == status


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
        ("CSV", "text/csv; charset=UTF-8; header=absent"),
        ("CSVWithNames", "text/csv; charset=UTF-8; header=present"),
        ("JSONEachRow", "application/json; charset=UTF-8"),
        ("Native", "application/octet-stream"),
        ("Pretty", "text/plain; charset=UTF-8"),
    ],
)
def test_content_type(fmt, expected):
    assert content_type(fmt) == expected


def test_choose_encoding_takes_clients_order():
    supported = ("lz4", "zstd", "gzip", "deflate")
    assert choose_encoding("lz4,zstd,gzip", supported) == "lz4"
    assert choose_encoding("br, gzip;q=0.5", supported) == "gzip"
    assert choose_encoding("br", supported) is None
    assert choose_encoding("", supported) is None


def test_clean_engine_message_drops_wrappers():
    raw = "Streaming insert finish failed: Code: 27. DB::Exception: bad. (X)"
    assert clean_engine_message(raw) == "Code: 27. DB::Exception: bad. (X)"
    doubled = "Code: 164. DB::Exception: Code: 164. DB::Exception: no. (READONLY)"
    assert clean_engine_message(doubled) == "Code: 164. DB::Exception: no. (READONLY)"
