"""Run a real ``meshloop up`` in a subprocess and find its endpoints from what it prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_ENDPOINT = re.compile(r"^meshloop: (HTTP API|ClickHouse|collector|xDS|CA)\s+((?:http|grpcs?)://\S+)")


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``check`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 5) -> tuple[int, str, dict[str, str]]:
    """GET ``url``; return (status, body, headers) for any HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


class MeshloopProcess:
    """``meshloop up`` with free ports; collects stdout/stderr lines as they come."""

    def __init__(self, data_dir: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.args = [
            sys.executable, "-m", "meshloop", "up",
            "--data-dir", str(data_dir), "--http-port", "0", "--clickhouse-http-port", "0",
            "--collector-port", "0", "--xds-port", "0", "--xds-secure-port", "0", *extra,
        ]  # fmt: skip
        self.env = {**os.environ, **(env or {})}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.endpoints: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> MeshloopProcess:
        self.stdout, self.stderr, self.endpoints = [], [], {}
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True).start()
        return self

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            match = _ENDPOINT.match(line)
            if match:
                self.endpoints[match.group(1)] = match.group(2)

    def wait_ready(self, timeout: float = 60) -> MeshloopProcess:
        poll(lambda: self.exited() or "meshloop: ready" in " ".join(self.stdout[-20:]), timeout, "ready")
        if self.exited():
            raise AssertionError(f"meshloop exited {self.proc.returncode}: {self.output()}")  # type: ignore[union-attr]
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def output(self) -> str:
        return "\n".join(self.stdout + self.stderr)

    @property
    def api(self) -> str:
        return self.endpoints["HTTP API"]

    @property
    def clickhouse(self) -> str:
        return self.endpoints["ClickHouse"]

    @property
    def collector_port(self) -> int:
        return int(self.endpoints["collector"].rsplit(":", 1)[1])

    @property
    def xds_port(self) -> int:
        return int(self.endpoints["xDS"].rsplit(":", 1)[1])

    def query(self, sql: str) -> str:
        """Run ``sql`` through the ClickHouse HTTP interface; return the TSV body."""
        request = urllib.request.Request(self.clickhouse + "/", data=sql.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    def metric(self, name_and_labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        body = http_get(self.api + "/metrics")[1]
        for line in body.splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Send ``sig``; return seconds until the process exited."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"meshloop did not stop within {timeout}s") from None
        return time.monotonic() - started

    def __enter__(self) -> MeshloopProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
