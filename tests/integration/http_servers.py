"""Tiny HTTP/1.1 upstreams for integration tests: each answers its own name."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Named(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # else ~25 req/s behind Envoy (ENVOY.md)
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"{self.server.name}\n".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def named_servers(*names: str) -> Iterator[dict[str, int]]:
    """One threaded server per name, answering ``<name>\\n``; yields {name: port}."""
    servers = {}
    for name in names:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    try:
        yield {name: server.server_address[1] for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
