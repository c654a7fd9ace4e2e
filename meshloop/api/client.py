"""A small client for a running meshloop's HTTP API (used by CLI commands).

The API's address comes from the data dir's ``endpoints.json`` (written by
``meshloop up``), else ``http://127.0.0.1:<http_port>``; the admin token, when set,
is sent as a bearer token.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from meshloop.config import Settings
from meshloop.datadir import read_endpoints
from meshloop.errors import MeshloopError


def api_url(settings: Settings) -> str:
    """Base URL of the HTTP API of the meshloop running on ``settings.data_dir``."""
    endpoints = read_endpoints(settings.data_dir) or {}
    return str(endpoints.get("http_api") or f"http://127.0.0.1:{settings.http_port}")


def get_json(settings: Settings, path: str, timeout: float = 10) -> Any:
    """GET ``path`` from the running meshloop and decode its JSON; errors are one line."""
    url = api_url(settings) + path
    request = urllib.request.Request(url)
    if settings.admin_token:
        request.add_header("Authorization", f"Bearer {settings.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise MeshloopError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeshloopError(
            f"cannot reach meshloop at {url}: {reason}. Is it running (meshloop up)?"
        ) from None
