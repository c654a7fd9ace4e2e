"""Shared pieces for integration tests of a small mesh: CA server, node agents, an echo app.

``MeshIdentity`` starts the CA's ``IstioCertificateService`` (in a :class:`LoopThread`) and
one ``meshloop agent`` process per SPIFFE id, each serving SDS on its own Unix socket under
a short ``/tmp`` directory (socket paths must stay under 108 bytes). ``EchoApp`` is the
workload behind a server sidecar: it answers JSON with the path and the
``x-forwarded-client-cert`` header it received. ``close()`` stops everything it started.
``KeepAlive`` is one persistent HTTP/1.1 connection (with a ``Host``) that fails if it is
ever replaced.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meshloop.identity.ca import CertificateAuthority, load_or_create_ca
from meshloop.identity.service import CAServer, start_ca_server
from meshloop.identity.spiffe import SpiffeId
from meshloop.identity.tokens import BootstrapToken, TokenTable
from tests.integration.test_agent_mtls_envoy import LoopThread, wait_for

__all__ = ["EchoApp", "KeepAlive", "LoopThread", "MeshIdentity", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]


class _Echo(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # else ~25 req/s behind Envoy (ENVOY.md)
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "xfcc": self.headers.get("x-forwarded-client-cert", "")})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EchoApp:
    """An HTTP/1.1 app on ``address`` (127.0.0.1) answering ``{"path", "xfcc"}``."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.server = ThreadingHTTPServer((address, 0), _Echo)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class KeepAlive:
    """One persistent HTTP/1.1 connection to ``127.0.0.1:port`` sending ``Host: host``."""

    def __init__(self, port: int, host: str | None = None) -> None:
        self.host = host
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.conn.connect()
        self.sock = self.conn.sock

    def get(self, path: str = "/") -> tuple[int, str]:
        """(status, body); fails if the connection was replaced or is to be closed."""
        self.conn.request("GET", path, headers={"Host": self.host} if self.host else {})
        response = self.conn.getresponse()
        body = response.read().decode()
        assert self.conn.sock is self.sock and not response.will_close, "the connection was not kept"
        return response.status, body

    def close(self) -> None:
        self.conn.close()


def _token(identity: SpiffeId) -> str:
    return f"token-{identity.namespace}-{identity.service_account}-0123456789"


class MeshIdentity:
    """A CA server plus one node agent (SDS socket) per identity."""

    def __init__(self, workdir: Path, loop: LoopThread, identities: list[SpiffeId], cert_ttl: str = "1h"):
        self.workdir = workdir
        self.loop = loop
        self.sockets_dir = Path(tempfile.mkdtemp(prefix="ml-mesh-", dir="/tmp"))
        self.ca: CertificateAuthority = load_or_create_ca(workdir / "data")
        self.agents: list[subprocess.Popen[bytes]] = []
        self._server: CAServer | None = None
        tokens = TokenTable([BootstrapToken(_token(i), i.namespace, i.service_account) for i in identities])
        self._server, self.ca_port = loop.run(start_ca_server(self.ca, tokens, "127.0.0.1", 0))
        (workdir / "root.pem").write_text(self.ca.bundle.pem())
        for identity in identities:
            self.agents.append(self._start_agent(identity, cert_ttl))

    def socket(self, identity: SpiffeId) -> str:
        """The SDS socket path of ``identity``'s agent."""
        return str(self.sockets_dir / f"{identity.namespace}-{identity.service_account}.sock")

    def agent_log(self, identity: SpiffeId) -> str:
        """What ``identity``'s agent has written so far (for failure messages)."""
        path = self.workdir / f"agent-{identity.namespace}-{identity.service_account}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start_agent(self, identity: SpiffeId, cert_ttl: str) -> subprocess.Popen[bytes]:
        name = f"{identity.namespace}-{identity.service_account}"
        token_file = self.workdir / f"{name}.token"
        token_file.write_text(_token(identity) + "\n")
        log = (self.workdir / f"agent-{name}.log").open("wb")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meshloop.identity.agent",
                "agent",
                "--ca-address",
                f"127.0.0.1:{self.ca_port}",
                "--ca-root",
                str(self.workdir / "root.pem"),
                "--token-file",
                str(token_file),
                "--namespace",
                identity.namespace,
                "--service-account",
                identity.service_account,
                "--trust-domain",
                identity.trust_domain,
                "--sds-socket",
                self.socket(identity),
                "--cert-ttl",
                cert_ttl,
            ],  # fmt: skip
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def close(self) -> None:
        for agent in self.agents:
            agent.terminate()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        if self._server is not None:
            self.loop.run(self._server.stop(0))
            self._server = None
        shutil.rmtree(self.sockets_dir, ignore_errors=True)
