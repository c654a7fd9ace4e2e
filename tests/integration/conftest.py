"""Fixtures for integration tests: a tiny upstream HTTP server and real Envoys."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.envoy_process import EnvoyProcess


class _Hello(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # else ~25 req/s behind Envoy (ENVOY.md)
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    """A tiny HTTP/1.1 server in a thread; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def start_envoy(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], EnvoyProcess]]:
    """Start Envoys from bootstraps; every one is stopped (terminate, wait, kill) afterwards."""
    started: list[EnvoyProcess] = []

    def start(bootstrap: dict[str, Any]) -> EnvoyProcess:
        process = EnvoyProcess(bootstrap, tmp_path, name=f"envoy{len(started)}")
        started.append(process)
        return process.start().wait_ready()

    yield start
    for process in started:
        process.stop()
