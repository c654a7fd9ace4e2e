"""Two real Envoys with node agents: mTLS by SPIFFE id, XFCC, refusals, rotation under load."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meshloop.identity.ca import CertificateAuthority, key_pem, load_or_create_ca, new_root
from meshloop.identity.ca import TrustBundle as Bundle
from meshloop.identity.envoy_tls import secure_bootstrap
from meshloop.identity.service import CAServer, start_ca_server
from meshloop.identity.spiffe import SpiffeId
from meshloop.identity.tokens import BootstrapToken, TokenTable
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from tests.integration.envoy_process import EnvoyProcess, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT = SpiffeId("cluster.local", "shop", "frontend")
SERVER = SpiffeId("cluster.local", "shop", "backend")


class _EchoXfcc(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopThread:
    """An asyncio loop in a thread (the CA server), so blocking Envoy polling never stalls it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@dataclass
class Mesh:
    ca: CertificateAuthority
    client_envoy: EnvoyProcess
    server_envoy: EnvoyProcess
    client_port: int
    server_port: int
    workdir: Path


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def mesh_factory(tmp_path: Path) -> Iterator[Callable[[str], Mesh]]:
    short = Path(tempfile.mkdtemp(prefix="ml-sds-", dir="/tmp"))  # Unix socket paths ≤ 107 bytes
    loop = LoopThread()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _EchoXfcc)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    agents: list[subprocess.Popen[bytes]] = []
    envoys: list[EnvoyProcess] = []
    servers: list[CAServer] = []

    def build(cert_ttl: str) -> Mesh:
        ca = load_or_create_ca(tmp_path / "data")
        tokens = TokenTable(
            [
                BootstrapToken(f"token-{i.service_account}-0123456789", i.namespace, i.service_account)
                for i in (CLIENT, SERVER)
            ]
        )
        server, ca_port = loop.run(start_ca_server(ca, tokens, "127.0.0.1", 0))
        servers.append(server)
        (tmp_path / "root.pem").write_text(ca.bundle.pem())
        for identity in (CLIENT, SERVER):
            token_file = tmp_path / f"{identity.service_account}.token"
            token_file.write_text(f"token-{identity.service_account}-0123456789\n")
            log = (tmp_path / f"agent-{identity.service_account}.log").open("wb")
            agents.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "meshloop.identity.agent",
                        "agent",
                        "--ca-address",
                        f"127.0.0.1:{ca_port}",
                        "--ca-root",
                        str(tmp_path / "root.pem"),
                        "--token-file",
                        str(token_file),
                        "--namespace",
                        identity.namespace,
                        "--service-account",
                        identity.service_account,
                        "--sds-socket",
                        str(short / f"{identity.service_account}.sock"),
                        "--cert-ttl",
                        cert_ttl,
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        server_port, client_port = free_port(), free_port()
        server_boot = build_bootstrap(
            BootstrapOptions(
                admin_port=free_port(),
                ads=False,
                listen_port=server_port,
                upstream_port=upstream.server_port,
                stats_sink="none",
                workload="backend",
            )
        )
        client_boot = build_bootstrap(
            BootstrapOptions(
                admin_port=free_port(),
                ads=False,
                listen_port=client_port,
                upstream_port=server_port,
                stats_sink="none",
                workload="frontend",
            )
        )
        server_boot = secure_bootstrap(server_boot, str(short / "backend.sock"), inbound_peers=[CLIENT.uri])
        client_boot = secure_bootstrap(
            client_boot, str(short / "frontend.sock"), outbound_servers=[SERVER.uri]
        )
        for name, boot in (("server", server_boot), ("client", client_boot)):
            envoy = EnvoyProcess(boot, tmp_path, name=f"envoy-{name}")
            envoys.append(envoy)
            envoy.start().wait_ready(timeout=30)
        return Mesh(ca, envoys[-1], envoys[-2], client_port, server_port, tmp_path)

    yield build
    for envoy in envoys:
        envoy.stop()
    for agent in agents:
        agent.terminate()
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    for server in servers:
        loop.run(server.stop(0))
    loop.close()
    upstream.shutdown()
    upstream.server_close()
    shutil.rmtree(short, ignore_errors=True)


def get(port: int, path: str = "/") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def served_serials(envoy: EnvoyProcess) -> set[str]:
    """Serials of the certificates (not CAs) Envoy holds, from admin ``/certs``."""
    status, body = envoy.admin("/certs")
    if status != 200:
        return set()
    serials = set()
    for entry in json.loads(body).get("certificates", []):
        for cert in entry.get("cert_chain", []):
            serials.add(cert["serial_number"])
    return serials


def tls_attempt(port: int, client: tuple[str, bytes] | None, workdir: Path) -> bytes:
    """Open TLS to the server sidecar (optionally with a client cert), send a GET, read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client:
        cert_file, key_file = workdir / "stranger.pem", workdir / "stranger.key"
        cert_file.write_text(client[0])
        key_file.write_bytes(client[1])
        context.load_cert_chain(cert_file, key_file)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                return conn.recv(4096)
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


def test_request_flows_over_mtls_with_the_callers_spiffe_id(mesh_factory: Callable[[str], Mesh]) -> None:
    mesh = mesh_factory("1h")
    wait_for(lambda: _ok(mesh.client_port), 20, "a request through both sidecars")
    status, body = get(mesh.client_port, "/hello")
    assert status == 200
    xfcc = json.loads(body)["xfcc"]
    assert f"URI={CLIENT.uri}" in xfcc, xfcc
    handshakes = mesh.server_envoy.stats("ssl.handshake")
    assert handshakes.get(f"listener.127.0.0.1_{mesh.server_port}.ssl.handshake", 0) >= 1, handshakes

    # a certificate from another CA, and no certificate at all, are both refused
    stranger_root, stranger_key = new_root(dt.datetime.now(dt.UTC))
    stranger = CertificateAuthority(stranger_root, stranger_key, Bundle([stranger_root]))
    key = ec.generate_private_key(ec.SECP256R1())
    chain = "".join(stranger.chain_pems(stranger.issue(key.public_key(), CLIENT, dt.datetime.now(dt.UTC))))
    assert b"HTTP/1.1" not in tls_attempt(mesh.server_port, (chain, key_pem(key)), mesh.workdir)
    assert b"HTTP/1.1" not in tls_attempt(mesh.server_port, None, mesh.workdir)
    # a certificate from the right CA but the wrong SPIFFE id is refused too
    good = mesh.ca.chain_pems(mesh.ca.issue(key.public_key(), SERVER, dt.datetime.now(dt.UTC)))
    assert b"HTTP/1.1" not in tls_attempt(mesh.server_port, ("".join(good), key_pem(key)), mesh.workdir)
    stats = mesh.server_envoy.stats("ssl")
    assert sum(v for k, v in stats.items() if k.endswith("ssl.fail_verify_no_cert")) >= 1
    assert sum(v for k, v in stats.items() if k.endswith("ssl.fail_verify_san")) >= 1


def _ok(port: int) -> bool:
    try:
        return get(port)[0] == 200
    except OSError:
        return False


def test_rotation_under_load_without_failures_or_restarts(mesh_factory: Callable[[str], Mesh]) -> None:
    mesh = mesh_factory("4s")
    wait_for(lambda: _ok(mesh.client_port), 20, "a request through both sidecars")
    pids = (mesh.client_envoy.proc.pid, mesh.server_envoy.proc.pid)  # type: ignore[union-attr]
    first = served_serials(mesh.server_envoy)
    client_first = served_serials(mesh.client_envoy)
    assert first and client_first
    seen: set[str] = set(first)
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, _ = get(mesh.client_port)
                counts["ok" if status == 200 else "failed"] += 1
            except OSError as exc:
                counts["failed"] += 1
                errors.append(repr(exc))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:

        def rotated_three_times() -> bool:
            seen.update(served_serials(mesh.server_envoy))
            return len(seen) >= len(first) + 3

        wait_for(rotated_three_times, 25, "three certificate rotations in the server sidecar")
    finally:
        stop.set()
        worker.join(timeout=10)
    assert counts["failed"] == 0, errors[:5]
    assert counts["ok"] > 50
    assert mesh.client_envoy.proc.poll() is None and mesh.server_envoy.proc.poll() is None  # type: ignore[union-attr]
    assert (mesh.client_envoy.proc.pid, mesh.server_envoy.proc.pid) == pids  # type: ignore[union-attr]
    assert served_serials(mesh.client_envoy) - client_first  # the client sidecar rotated too
    assert os.path.exists(mesh.workdir / "data" / "ca" / "root-key.pem")
