"""Pure parsing for the ClickHouse HTTP interface: users, credentials, URL parameters,
statement shape, error statuses and content types.

Mirrors https://clickhouse.com/docs/en/interfaces/http. Nothing here does I/O; the
aiohttp shell is :mod:`meshloop.api.clickhouse_http`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# ClickHouse exception codes used by the interface itself (src/Common/ErrorCodes.cpp).
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
UNKNOWN_COMPRESSION_METHOD = 89
CANNOT_DECOMPRESS = 271
QUERY_IS_TOO_LARGE = 229
AUTHENTICATION_FAILED = 516
STD_EXCEPTION = 1001

_CODE_NAMES = {
    SYNTAX_ERROR: "SYNTAX_ERROR",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    UNKNOWN_COMPRESSION_METHOD: "UNKNOWN_COMPRESSION_METHOD",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    STD_EXCEPTION: "STD_EXCEPTION",
}

# URL parameters the HTTP handler consumes itself; everything else (bar param_*) is a
# setting (HTTPHandler.cpp, reserved_param_names, plus database/default_format).
RESERVED_PARAMS = frozenset(
    {
        "query", "database", "default_format", "query_id", "user", "password", "quota_key",
        "session_id", "session_timeout", "session_check", "close_session", "compress",
        "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
        "stacktrace",
    }
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# exceptionCodeToHTTPStatus.cpp: ClickHouse's mapping of exception codes to HTTP statuses.
_STATUS_BY_CODE: dict[int, int] = {194: 401}
_STATUS_BY_CODE.update({code: 403 for code in (192, 193, 516, 512, 497)})
_STATUS_BY_CODE.update(
    {
        code: 400
        for code in (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123,
                     8, 167, 168, 223, 62, 117, 53, 321)
    }
)
_STATUS_BY_CODE.update(
    {code: 404 for code in (60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511)}
)
_STATUS_BY_CODE.update({229: 413, 48: 501, 209: 503, 76: 503, 381: 411, 159: 408, 439: 503,
                        779: 415})


class ProtocolError(Exception):
    """A request the interface refuses, carrying the ClickHouse code to report."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)

    def clickhouse_text(self) -> str:
        """The body ClickHouse would send: ``Code: N. DB::Exception: ... (NAME)``."""
        return format_exception_text(self.code, str(self))


def format_exception_text(code: int, message: str) -> str:
    """Render ``message`` the way ClickHouse renders an exception of ``code``."""
    name = _CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
    return f"Code: {code}. DB::Exception: {message}. ({name})"


def http_status(code: int | None) -> int:
    """The HTTP status ClickHouse answers an exception ``code`` with (500 by default)."""
    return _STATUS_BY_CODE.get(code or 0, 500)


def clean_engine_message(message: str) -> str:
    """Tidy a chdb error text: drop wrapper prefixes and a repeated ``Code: N.`` head."""
    message = message.strip()
    start = message.find("Code: ")
    if start > 0:
        message = message[start:]
    match = re.match(r"(Code: \d+\. DB::Exception: )(?=Code: \d+\. DB::Exception: )", message)
    if match:
        message = message[match.end():]
    return message


# -- users -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClickHouseUser:
    """One account of the interface. ``password=None`` accepts any password (or none).

    A ``readonly`` user runs every query with ClickHouse's ``readonly=2``: reads and
    setting changes are allowed, writes and DDL fail with code 164 (READONLY).
    """

    password: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class ClickHouseAuth:
    """The accounts the interface accepts, by name; default: ``default`` without password."""

    users: Mapping[str, ClickHouseUser] = field(
        default_factory=lambda: {"default": ClickHouseUser()}
    )

    def authenticate(self, user: str, password: str) -> ClickHouseUser:
        """Return the account for ``user`` or raise code 516 (AUTHENTICATION_FAILED)."""
        account = self.users.get(user)
        expected = account.password if account is not None else None
        ok = account is not None and (
            expected is None
            or hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))
        )
        if not ok:
            raise ProtocolError(
                AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, "
                "or there is no user with such name",
            )
        assert account is not None
        return account


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """(user, password) from Basic auth, ``X-ClickHouse-User/Key`` or ``user/password``.

    As ClickHouse, mixing two methods is refused; no credentials mean ``default``.
    """
    authorization = headers.get("Authorization")
    has_headers = "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers
    has_params = "user" in params or "password" in params
    if sum((authorization is not None, has_headers, has_params)) > 1:
        raise ProtocolError(
            AUTHENTICATION_FAILED,
            "Invalid authentication: it is not allowed to use more than one of "
            "the Authorization header, X-ClickHouse-User/Key headers and user/password "
            "parameters simultaneously",
        )
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise ProtocolError(
                AUTHENTICATION_FAILED, f"Invalid authentication: unsupported scheme {scheme!r}"
            )
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ProtocolError(
                AUTHENTICATION_FAILED, "Invalid authentication: malformed Basic credentials"
            ) from None
        user, _, password = decoded.partition(":")
        return user or "default", password
    if has_headers:
        return headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key", "")
    return params.get("user") or "default", params.get("password", "")


# -- URL parameters ----------------------------------------------------------------------
@dataclass(frozen=True)
class RequestParams:
    """The URL parameters of one request, split by role."""

    query: str = ""
    database: str | None = None
    default_format: str = "TabSeparated"
    query_id: str | None = None
    settings: tuple[tuple[str, str], ...] = ()
    bind: Mapping[str, str] = field(default_factory=dict)

    def setting(self, name: str) -> str | None:
        """The last value given for setting ``name``, if any."""
        value = None
        for key, setting_value in self.settings:
            if key == name:
                value = setting_value
        return value


def parse_params(items: Iterator[tuple[str, str]] | list[tuple[str, str]]) -> RequestParams:
    """Split URL (or form) parameters into query, database, format, binds and settings.

    ``compress``/``decompress`` (ClickHouse's own block compression) are not
    implemented and refused with code 48 rather than answered in the wrong encoding.
    """
    values: dict[str, str] = {}
    bind: dict[str, str] = {}
    settings: list[tuple[str, str]] = []
    for key, value in items:
        if key.startswith("param_"):
            bind[key[len("param_"):]] = value
        elif key in RESERVED_PARAMS:
            values[key] = value
        else:
            if not _SETTING_NAME.match(key):
                raise ProtocolError(UNKNOWN_SETTING, f"Unknown setting '{key}'")
            settings.append((key, value))
    for flag in ("compress", "decompress"):
        if values.get(flag, "0") not in ("", "0", "false"):
            raise ProtocolError(
                NOT_IMPLEMENTED,
                f"'{flag}=1' (ClickHouse block compression) is not supported by meshloop's "
                "embedded store; use HTTP Content-Encoding / enable_http_compression",
            )
    return RequestParams(
        query=values.get("query", ""),
        database=values.get("database") or None,
        default_format=values.get("default_format") or "TabSeparated",
        query_id=values.get("query_id") or None,
        settings=tuple(settings),
        bind=bind,
    )


def set_statement(settings: tuple[tuple[str, str], ...]) -> str | None:
    """One ``SET a = 'x', b = 'y'`` statement for ``settings`` (values as string literals,
    which ClickHouse converts to each setting's type), or None when there are none."""
    if not settings:
        return None
    return "SET " + ", ".join(f"{name} = {quote_string(value)}" for name, value in settings)


def quote_string(value: str) -> str:
    """A ClickHouse string literal for ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    """A back-quoted ClickHouse identifier for ``name``."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# -- statements --------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _tokens(text: str, start: int = 0) -> Iterator[tuple[str, int, int]]:
    """Top-level tokens of SQL ``text`` as (word-or-char, start, end); lazy, so a caller can
    stop at the data of an INSERT without scanning it. Strings, quoted identifiers and
    comments are skipped as units."""
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("--", i) or ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch in "'\"`":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            yield text[i:j + 1], i, min(j + 1, n)
            i = j + 1
        else:
            match = _WORD.match(text, i)
            end = match.end() if match else i + 1
            yield text[i:end], i, end
            i = end


def statement_kind(sql: str) -> str:
    """The statement's first keyword, upper-cased (``SELECT``, ``INSERT``, ...; '' if none)."""
    for token, _, _ in _tokens(sql):
        if token != "(":
            return token.upper()
    return ""


@dataclass(frozen=True)
class InsertShape:
    """``INSERT INTO t [(cols)] [SETTINGS ...]`` with its input format; data from
    ``data_offset`` on (an offset into the text the shape was parsed from)."""

    statement: str
    fmt: str
    data_offset: int


def insert_shape(text: str) -> InsertShape | None:
    """Split an INSERT with inline data (``FORMAT fmt`` or ``VALUES``) from its data.

    ``text`` may hold megabytes of data after the statement (decode bytes as latin-1 so
    offsets stay byte offsets); only the statement head is scanned. Returns None for
    anything else (``INSERT ... SELECT``, other statements). Data starts after the
    format name, spaces and at most one line break, as ClickHouse's parser does.
    """
    tokens = _tokens(text)
    first = next(tokens, None)
    if first is None or first[0].upper() != "INSERT":
        return None
    depth = 0
    for token, start, end in tokens:
        upper = token.upper()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and upper in ("SELECT", "WITH"):
            return None
        elif depth == 0 and upper == "VALUES":
            return InsertShape(text[:start].rstrip(), "Values", end)
        elif depth == 0 and upper == "FORMAT":
            name = next(tokens, None)
            if name is None or not _WORD.fullmatch(name[0]):
                raise ProtocolError(SYNTAX_ERROR, "Syntax error: expected a format name")
            return InsertShape(text[:start].rstrip(), name[0], _data_start(text, name[2]))
    return None


def _data_start(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\f":
        pos += 1
    if pos < n and text[pos] == "\r":
        pos += 1
    if pos < n and text[pos] == "\n":
        pos += 1
    return pos


def output_format(sql: str) -> str | None:
    """The format named by a top-level ``FORMAT x`` clause of a query, if any."""
    found = None
    depth = 0
    tokens = _tokens(sql)
    for token, _, _ in tokens:
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and token.upper() == "FORMAT":
            name = next(tokens, None)
            if name is not None and _WORD.fullmatch(name[0]):
                found = name[0]
    return found


_BINARY_PREFIXES = ("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "Protobuf",
                    "MsgPack", "BSON", "CapnProto", "Npy")


def content_type(fmt: str) -> str:
    """The ``Content-Type`` ClickHouse sends with a result in ``fmt``."""
    if fmt.startswith(_BINARY_PREFIXES):
        return "application/octet-stream"
    if fmt.startswith("JSON") or fmt == "NDJSON":
        return "application/json; charset=UTF-8"
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        header = "present" if "WithNames" in fmt else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    return "text/plain; charset=UTF-8"


def choose_encoding(accept_encoding: str, supported: tuple[str, ...]) -> str | None:
    """The first encoding of the client's ``Accept-Encoding`` list we can produce."""
    for part in accept_encoding.split(","):
        name = part.split(";", 1)[0].strip().lower()
        if name in supported:
            return name
    return None
