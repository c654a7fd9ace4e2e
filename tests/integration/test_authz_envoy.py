"""AuthorizationPolicy and PeerAuthentication with real Envoys and node agents.

A server sidecar (``shop/backend``) gets its listener, routes and cluster over ADS, built
with :mod:`meshloop.xds.mtls` and :mod:`meshloop.xds.rbac` (the RBAC policy per route, so
a change is an RDS-only push). Two client sidecars (``shop/sleep``, ``shop/intruder``) are
static Envoys whose upstream uses :func:`istio_mutual_transport_socket`. Every workload
has its own node agent (SDS) and certificate from the meshloop CA. Everything polls to a
deadline.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 (registers the type URL)
from google.protobuf import json_format

from meshloop.identity.envoy_tls import sds_cluster
from meshloop.identity.spiffe import SpiffeId
from meshloop.mesh.security import AuthorizationPolicy
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap, node_id
from meshloop.xds.cache import SnapshotCache
from meshloop.xds.mtls import MtlsMode, inbound_filter_chains, istio_mutual_transport_socket, listener_filters
from meshloop.xds.rbac import (
    FILTER_NAMES,
    inbound_http_filters,
    route_rbac_override,
    route_scoped_http_filters,
)
from meshloop.xds.resources import CLUSTER, LISTENER, ROUTE
from meshloop.xds.server import start_xds_server
from meshloop.xds.snapshot import Snapshot
from meshloop.xds.status import XdsStatus
from tests.integration.envoy_process import EnvoyProcess, free_port, validate
from tests.integration.mesh_fixtures import EchoApp, LoopThread, MeshIdentity, wait_for

pytestmark = pytest.mark.integration

NS = "shop"
SERVER = SpiffeId("cluster.local", NS, "backend")
SLEEP = SpiffeId("cluster.local", NS, "sleep")
INTRUDER = SpiffeId("cluster.local", NS, "intruder")
LABELS = {"app": "backend", "version": "v1"}
HOST = "backend.shop.svc.cluster.local"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
DEADLINE = 15.0


def policy(name: str, spec: dict[str, Any], namespace: str = NS) -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


DENY_INTRUDER = policy(
    "deny-intruder",
    {
        "selector": {"matchLabels": {"app": "backend"}},
        "action": "DENY",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/intruder"]}}]}],
    },
)
ALLOW_NOTHING = policy("allow-nothing", {})
ALLOW_SLEEP = policy(
    "allow-sleep", {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/sleep"]}}]}]}
)


def server_snapshot(
    listen_port: int, app_port: int, mode: MtlsMode, policies: list[AuthorizationPolicy]
) -> Snapshot:
    """The server sidecar's inbound listener (mode), route (RBAC per route) and app cluster."""
    manager = {
        "@type": HCM_TYPE,
        "stat_prefix": "inbound",
        "codec_type": "AUTO",
        "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": "inbound"},
        "http_filters": [*route_scoped_http_filters(), ROUTER],
    }
    listener = {
        "name": "inbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
        "listener_filters": listener_filters(mode),
        "filter_chains": inbound_filter_chains(mode, manager),
    }
    route = {
        "name": "inbound",
        "virtual_hosts": [
            {
                "name": "inbound",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {"cluster": "inbound|app"},
                        "typed_per_filter_config": route_rbac_override(NS, LABELS, policies),
                    }
                ],
            }
        ],
    }
    app = {
        "name": "inbound|app",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "inbound|app",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": app_port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return Snapshot.build(
        {
            LISTENER: [json_format.ParseDict(listener, listener_pb2.Listener())],
            ROUTE: [json_format.ParseDict(route, route_pb2.RouteConfiguration())],
            CLUSTER: [json_format.ParseDict(app, cluster_pb2.Cluster())],
        }
    )


@dataclass
class AuthzMesh:
    loop: LoopThread
    cache: SnapshotCache
    status: XdsStatus
    server_node: str
    server_envoy: EnvoyProcess
    server_port: int
    app_port: int
    client_ports: dict[str, int]  # service account -> client sidecar listener
    client_envoys: dict[str, EnvoyProcess]

    def push(self, mode: MtlsMode, policies: list[AuthorizationPolicy]) -> Snapshot:
        """Publish a snapshot for the server sidecar (on the xDS server's loop)."""
        snapshot = server_snapshot(self.server_port, self.app_port, mode, policies)

        async def publish() -> None:
            self.cache.set_snapshot(self.server_node, snapshot)

        self.loop.run(publish())
        return snapshot

    def acked(self, snapshot: Snapshot) -> bool:
        async def read() -> list[dict[str, Any]]:
            return self.status.status()

        for row in self.loop.run(read()):
            if row["node_id"] == self.server_node:
                types = row["types"]
                return all(
                    types.get(short, {}).get("acked_version") == snapshot.version(url)
                    for short, url in (("LDS", LISTENER), ("RDS", ROUTE), ("CDS", CLUSTER))
                )
        return False

    def connections(self) -> int:
        """Connections the server sidecar's inbound listener has accepted so far."""
        key = f"listener.127.0.0.1_{self.server_port}.downstream_cx_total"
        return self.server_envoy.stats("downstream_cx_total").get(key, 0)


def client_bootstrap(identity: SpiffeId, listen: int, server_port: int, socket: str) -> dict[str, Any]:
    boot = build_bootstrap(
        BootstrapOptions(
            admin_port=free_port(),
            ads=False,
            listen_port=listen,
            upstream_port=server_port,
            stats_sink="none",
            workload=identity.service_account,
            namespace=identity.namespace,
        )
    )
    clusters = boot["static_resources"]["clusters"]
    clusters.append(sds_cluster(socket))
    for cluster in clusters:
        if cluster["name"] == "example_upstream":
            cluster["transport_socket"] = istio_mutual_transport_socket(HOST, server_port, None, [SERVER.uri])
    return boot


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthzMesh]:
    workdir = tmp_path_factory.mktemp("authz")
    loop = LoopThread()
    app = EchoApp()
    identity = MeshIdentity(workdir, loop, [SERVER, SLEEP, INTRUDER])
    cache = SnapshotCache(external_clusters=["sds-grpc"])
    status = XdsStatus()
    xds_server, xds_port = loop.run(start_xds_server(cache, "127.0.0.1", 0, status=status))
    envoys: list[EnvoyProcess] = []
    try:
        options = BootstrapOptions(
            admin_port=free_port(), xds_port=xds_port, stats_sink="none", workload="backend", namespace=NS
        )
        server_boot = build_bootstrap(options)
        server_boot["static_resources"]["clusters"].append(sds_cluster(identity.socket(SERVER)))
        server_envoy = EnvoyProcess(server_boot, workdir, name="envoy-backend")
        result = AuthzMesh(loop, cache, status, node_id(options), server_envoy, free_port(), app.port, {}, {})
        result.push("STRICT", [])  # before the sidecar starts: its first ADS request finds it
        envoys.append(server_envoy.start())
        for client in (SLEEP, INTRUDER):
            port = free_port()
            boot = client_bootstrap(client, port, result.server_port, identity.socket(client))
            envoy = EnvoyProcess(boot, workdir, name=f"envoy-{client.service_account}")
            envoys.append(envoy.start())
            result.client_envoys[client.service_account] = envoy
            result.client_ports[client.service_account] = port
        for envoy in envoys:
            envoy.wait_ready(timeout=30)
        for who, envoy in (
            (SERVER, server_envoy),
            *((c, result.client_envoys[c.service_account]) for c in (SLEEP, INTRUDER)),
        ):
            holds_certificate(envoy, who, identity)
        yield result
    finally:
        for envoy in envoys:
            envoy.stop()
        loop.run(xds_server.stop(0))
        identity.close()
        app.close()
        loop.close()


def holds_certificate(envoy: EnvoyProcess, who: SpiffeId, identity: MeshIdentity) -> None:
    """Wait until the sidecar serves ``who``'s certificate (admin ``/certs``); fail with the agent's log."""

    def holds() -> bool:
        status, body = envoy.admin("/certs")
        return status == 200 and who.uri in body

    try:
        wait_for(holds, DEADLINE, f"the {who.service_account} sidecar to hold {who.uri}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nagent log:\n{identity.agent_log(who)}\nenvoy log:\n{envoy.log()}"
        ) from None


class KeepAlive:
    """One persistent HTTP/1.1 connection to a client sidecar; fails if it is ever replaced."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.conn.connect()
        self.sock = self.conn.sock

    def get(self, path: str = "/") -> tuple[int, str]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read().decode()
        assert self.conn.sock is self.sock and not response.will_close, "the connection was not kept"
        return response.status, body

    def close(self) -> None:
        self.conn.close()


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request on a new connection; (status, body), status 0 when nothing answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
        return 0, ""


def answers(port: int, status: int, streak: int = 3, headers: dict[str, str] | None = None) -> str:
    """Wait until ``streak`` consecutive new-connection requests answer ``status``; the last body."""
    seen: list[tuple[int, str]] = []

    def check() -> bool:
        seen.append(get(port, headers=headers))
        good = seen[-streak:]
        return len(good) == streak and all(s == status for s, _ in good)

    try:
        wait_for(check, DEADLINE, f"{streak}x {status} from port {port}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answers: {seen[-streak:]}") from None
    return seen[-1][1]


def until_status(client: KeepAlive, status: int, timeout: float) -> str:
    """Send on the kept connection until it answers ``status``; the body."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, body = client.get()
        if code == status:
            return body
    raise AssertionError(f"no {status} on the kept connection within {timeout}s")


def converge(mesh: AuthzMesh, mode: MtlsMode, policies: list[AuthorizationPolicy]) -> Snapshot:
    snapshot = mesh.push(mode, policies)
    wait_for(lambda: mesh.acked(snapshot), DEADLINE, "the server sidecar to ACK the snapshot")
    return snapshot


def test_deny_policy_reaches_existing_connections_within_a_second(mesh: AuthzMesh) -> None:
    converge(mesh, "STRICT", [])
    sleep_port, intruder_port = mesh.client_ports["sleep"], mesh.client_ports["intruder"]
    body = answers(sleep_port, 200)
    assert f"URI={SLEEP.uri}" in json.loads(body)["xfcc"]
    assert f"URI={INTRUDER.uri}" in json.loads(answers(intruder_port, 200))["xfcc"]

    sleep, intruder = KeepAlive(sleep_port), KeepAlive(intruder_port)
    try:
        assert sleep.get()[0] == 200 and intruder.get()[0] == 200
        accepted = mesh.connections()
        pushed = time.monotonic()
        mesh.push("STRICT", [DENY_INTRUDER])
        body = until_status(intruder, 403, timeout=5)
        took = time.monotonic() - pushed
        assert body == "RBAC: access denied"
        assert sleep.get()[0] == 200
        print(f"\nDENY on an existing connection: {took * 1000:.1f} ms after the push")
        assert took < 1.0

        pushed = time.monotonic()
        mesh.push("STRICT", [])
        until_status(intruder, 200, timeout=5)
        restored = time.monotonic() - pushed
        print(f"policy removed, existing connection allowed again: {restored * 1000:.1f} ms after the push")
        assert restored < 1.0
        assert mesh.connections() == accepted, "the server sidecar saw new connections"
    finally:
        sleep.close()
        intruder.close()


def test_allow_policies_allow_nothing_and_allow_one_principal(mesh: AuthzMesh) -> None:
    sleep_port, intruder_port = mesh.client_ports["sleep"], mesh.client_ports["intruder"]
    converge(mesh, "STRICT", [ALLOW_NOTHING])
    assert answers(sleep_port, 403) == "RBAC: access denied"
    answers(intruder_port, 403)

    converge(mesh, "STRICT", [ALLOW_NOTHING, ALLOW_SLEEP])
    answers(sleep_port, 200)
    answers(intruder_port, 403)
    converge(mesh, "STRICT", [])
    answers(intruder_port, 200)


def _openssl_request(port: int) -> str:
    """An ``openssl s_client`` without any client certificate sending one GET; its output."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-ign_eof"],
        input=b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n",
        capture_output=True,
        timeout=10,
        check=False,
    )
    return (done.stdout + done.stderr).decode(errors="replace")


def test_strict_refuses_callers_without_a_mesh_certificate(mesh: AuthzMesh) -> None:
    converge(mesh, "STRICT", [])
    answers(mesh.client_ports["sleep"], 200)
    output = _openssl_request(mesh.server_port)
    assert "HTTP/1.1" not in output, output
    assert get(mesh.server_port)[0] == 0  # plaintext: no HTTP answer at all
    stats = mesh.server_envoy.stats("ssl")
    assert sum(v for k, v in stats.items() if k.endswith("ssl.fail_verify_no_cert")) >= 1, stats


def test_permissive_accepts_plaintext_and_mtls(mesh: AuthzMesh) -> None:
    converge(mesh, "PERMISSIVE", [DENY_INTRUDER])
    forged = {"x-forwarded-client-cert": f"URI={SLEEP.uri}"}
    plain = json.loads(answers(mesh.server_port, 200, headers=forged))
    assert plain["xfcc"] == "", "a plaintext caller's XFCC must be stripped"
    assert f"URI={SLEEP.uri}" in json.loads(answers(mesh.client_ports["sleep"], 200))["xfcc"]
    answers(mesh.client_ports["intruder"], 403)  # mTLS callers still carry their identity

    converge(mesh, "STRICT", [])
    answers(mesh.server_port, 0)  # back to STRICT: plaintext refused


def test_listener_level_filters_and_every_chain_pass_envoy_validation(tmp_path: Path) -> None:
    """``inbound_http_filters`` (every field kind) in each mode's listener: ``envoy --mode validate``."""
    rules = [
        {
            "from": [
                {"source": {"principals": ["cluster.local/ns/shop/sa/*"], "notNamespaces": ["attic"]}},
                {
                    "source": {
                        "ipBlocks": ["10.0.0.0/8"],
                        "remoteIpBlocks": ["::1"],
                        "serviceAccounts": ["a/b"],
                    }
                },
            ],
            "to": [
                {"operation": {"hosts": ["*.shop"], "methods": ["GET"], "paths": ["/api/*"], "ports": ["80"]}}
            ],
            "when": [
                {"key": "request.headers[x-user]", "values": ["*"]},
                {"key": "source.namespace", "notValues": ["dev-*"]},
                {"key": "destination.port", "values": ["8080"]},
                {"key": "connection.sni", "values": ["*.local"]},
            ],
        }
    ]
    policies = [
        policy("audit", {"action": "AUDIT", "rules": rules}),
        policy("deny", {"action": "DENY", "rules": rules}),
        ALLOW_NOTHING,
        ALLOW_SLEEP,
    ]
    filters = inbound_http_filters(NS, LABELS, policies)
    assert [f["name"] for f in filters] == list(FILTER_NAMES.values())
    manager = {
        "@type": HCM_TYPE,
        "stat_prefix": "inbound",
        "route_config": {
            "name": "inbound",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                    "typed_per_filter_config": route_rbac_override(NS, LABELS, policies),
                }
            ],
        },
        "http_filters": [*filters, ROUTER],
    }
    listeners = [
        {
            "name": mode,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}},
            "listener_filters": listener_filters(mode),
            "filter_chains": inbound_filter_chains(mode, manager),
        }
        for mode in ("STRICT", "PERMISSIVE", "DISABLE")
    ]
    app = {"name": "app", "type": "STATIC", "connect_timeout": "1s"}
    bootstrap = {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": {
            "listeners": listeners,
            "clusters": [app, sds_cluster(str(tmp_path / "sds.sock"))],
        },
    }
    config = tmp_path / "validate.json"
    config.write_text(json.dumps(bootstrap))
    done = validate(config)
    assert done.returncode == 0, done.stdout + done.stderr
