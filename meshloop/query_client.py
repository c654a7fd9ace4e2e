"""``meshloop query``: one statement through ClickHouse's HTTP interface, printed.

Where the statement goes, first match wins: ``--url``; the configured
``clickhouse_url``; the meshloop running on the data dir (its ``endpoints.json``);
``http://127.0.0.1:<clickhouse_http_port>``.
"""

from __future__ import annotations

import base64
import sys
import urllib.error
import urllib.request
from urllib.parse import unquote, urlencode, urlsplit

from meshloop.config import Settings
from meshloop.datadir import read_endpoints
from meshloop.errors import MeshloopError


def resolve_url(settings: Settings, url: str | None) -> str:
    """The ClickHouse HTTP URL a query should go to (see the module docstring)."""
    if url:
        return url
    if settings.clickhouse_url:
        return settings.clickhouse_url
    endpoints = read_endpoints(settings.data_dir) or {}
    if "clickhouse_http" in endpoints:
        return str(endpoints["clickhouse_http"])
    return f"http://127.0.0.1:{settings.clickhouse_http_port}"


def run_query(settings: Settings, sql: str, *, fmt: str, url: str | None = None, timeout: float = 300) -> int:
    """Send ``sql``; print the result (exit 0) or ClickHouse's error (exit 1)."""
    target = urlsplit(resolve_url(settings, url))
    user = unquote(target.username) if target.username else "default"
    password = unquote(target.password) if target.password else settings.clickhouse_password
    database = unquote(target.path.strip("/")) or settings.database
    port = f":{target.port}" if target.port else ""
    endpoint = f"{target.scheme}://{target.hostname}{port}/?" + urlencode(
        {"database": database, "default_format": fmt}
    )
    request = urllib.request.Request(endpoint, data=sql.encode(), method="POST")
    if password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    else:
        request.add_header("X-ClickHouse-User", user)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(1 << 16):
                sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        return 0
    except urllib.error.HTTPError as exc:
        message = exc.read().decode(errors="replace").strip()
        code = exc.headers.get("X-ClickHouse-Exception-Code")
        print(message or f"HTTP {exc.code} {exc.reason}", file=sys.stderr)
        if code is None and not message:
            print(f"(no ClickHouse error code; HTTP {exc.code})", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeshloopError(
            f"cannot reach ClickHouse at {target.scheme}://{target.hostname}{port}: {reason}. "
            "Is meshloop running (meshloop up)?"
        ) from None
