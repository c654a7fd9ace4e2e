"""Security end to end: Istio YAML → MeshPusher(security_hooks()) → ADS → two sidecar Envoys.

A ``shop`` mesh written as Istio YAML: ``reviews`` (one WorkloadEntry at 127.0.0.2 = the
server sidecar, whose app is an echo server on 127.0.0.1), ``productpage`` (the client
workload, at 127.0.0.3), PeerAuthentication STRICT for ``shop`` and a DestinationRule
``tls.mode: ISTIO_MUTUAL`` for reviews. Both sidecars are Envoys bootstrapped with
``sds_socket`` (``meshloop bootstrap --sds-socket``) next to their own node agent, with
certificates from the meshloop CA; everything else they get over ADS from one
:class:`MeshPusher`. Port-offset metadata keeps their outbound listeners (service port
9080) apart on one host. Polls to deadlines; no sleeps as synchronisation.

The request path: test → productpage sidecar outbound (127.0.0.1:9080+offset, Host
``reviews``) → ISTIO_MUTUAL → reviews sidecar inbound (STRICT, RBAC per route) → app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from meshloop.identity.spiffe import SpiffeId
from meshloop.mesh import load_and_validate
from meshloop.mesh.security import AuthorizationPolicy
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from meshloop.xds.cache import SnapshotCache
from meshloop.xds.generate import MeshPusher
from meshloop.xds.overrides import Overrides
from meshloop.xds.security_hooks import security_hooks
from meshloop.xds.server import start_xds_server
from tests.integration.envoy_process import EnvoyProcess, free_port
from tests.integration.mesh_fixtures import EchoApp, KeepAlive, LoopThread, MeshIdentity, wait_for

pytestmark = pytest.mark.integration

NS = "shop"
REVIEWS = SpiffeId("cluster.local", NS, "reviews")
PRODUCTPAGE = SpiffeId("cluster.local", NS, "productpage")
SERVER_IP, CLIENT_IP = "127.0.0.2", "127.0.0.3"
SERVICE_PORT = 9080
DEADLINE = 20.0

MESH = """
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {app_port}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: shop}}
spec:
  address: {server_ip}
  ports: {{http: {app_port}}}
  labels: {{app: reviews, version: v1}}
  serviceAccount: reviews
---
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: shop}}
spec:
  selector: {{app: productpage}}
  ports: [{{name: http, port: 9080, targetPort: {client_app_port}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage-v1, namespace: shop}}
spec:
  address: {client_ip}
  ports: {{http: {client_app_port}}}
  labels: {{app: productpage, version: v1}}
  serviceAccount: productpage
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""

DENY_PRODUCTPAGE = AuthorizationPolicy.model_validate(
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-productpage", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "reviews"}},
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/productpage"]}}]}],
        },
    }
)


@dataclass
class SecureMesh:
    loop: LoopThread
    pusher: MeshPusher
    client: EnvoyProcess
    server: EnvoyProcess
    client_port: int  # the productpage sidecar's outbound listener for service port 9080
    app: EchoApp

    def set_overrides(self, overrides: Overrides) -> None:
        """``pusher.set_overrides`` on the pusher's loop."""

        async def call() -> None:
            self.pusher.set_overrides(overrides)

        self.loop.run(call())

    def inbound_connections(self) -> int:
        """Connections the reviews sidecar's inbound listener has accepted so far."""
        key = f"listener.{SERVER_IP}_{self.app.port}.downstream_cx_total"
        return self.server.stats("downstream_cx_total").get(key, 0)


def sidecar_bootstrap(who: SpiffeId, ip: str, xds_port: int, socket: str) -> dict[str, Any]:
    """A sidecar bootstrap with the agent's SDS socket, its outbound listeners moved to a free
    port (``MESHLOOP_OUTBOUND_PORT_OFFSET``) so two sidecars share the host."""
    options = BootstrapOptions(
        admin_port=free_port(), xds_port=xds_port, collector_port=free_port(), stats_sink="none",
        workload=who.service_account, namespace=who.namespace, ip=ip, sds_socket=socket,
    )  # fmt: skip
    boot = build_bootstrap(options)
    boot["node"]["metadata"]["MESHLOOP_OUTBOUND_PORT_OFFSET"] = str(free_port() - SERVICE_PORT)
    return boot


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureMesh]:
    workdir = tmp_path_factory.mktemp("mesh-security")
    loop = LoopThread()
    app = EchoApp("127.0.0.1")  # the server sidecar's inbound listener takes SERVER_IP:<same port>
    (workdir / "mesh.yaml").write_text(
        MESH.format(app_port=app.port, server_ip=SERVER_IP, client_ip=CLIENT_IP, client_app_port=free_port())
    )
    config, issues = load_and_validate([workdir / "mesh.yaml"])
    assert config is not None, [i.render() for i in issues]
    identity = MeshIdentity(workdir, loop, [REVIEWS, PRODUCTPAGE])
    cache = SnapshotCache(external_clusters={"meshloop_collector", "meshloop_xds"})

    async def start() -> tuple[Any, int, MeshPusher]:
        server, port = await start_xds_server(cache, "127.0.0.1", 0)
        pusher = MeshPusher(cache, hooks=security_hooks()).start()
        pusher.update_config(config)
        pusher.push_all()
        return server, port, pusher

    xds_server, xds_port, pusher = loop.run(start())
    envoys: list[EnvoyProcess] = []
    try:
        server_boot = sidecar_bootstrap(REVIEWS, SERVER_IP, xds_port, identity.socket(REVIEWS))
        client_boot = sidecar_bootstrap(PRODUCTPAGE, CLIENT_IP, xds_port, identity.socket(PRODUCTPAGE))
        server = EnvoyProcess(server_boot, workdir, name="envoy-reviews")
        client = EnvoyProcess(client_boot, workdir, name="envoy-productpage")
        envoys += [server.start(), client.start()]
        for envoy, who in ((server, REVIEWS), (client, PRODUCTPAGE)):
            try:
                envoy.wait_ready(timeout=DEADLINE)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nagent log:\n{identity.agent_log(who)}") from None
        offset = int(client_boot["node"]["metadata"]["MESHLOOP_OUTBOUND_PORT_OFFSET"])
        yield SecureMesh(loop, pusher, client, server, SERVICE_PORT + offset, app)
    finally:
        for envoy in envoys:
            envoy.stop()

        async def stop() -> None:
            await pusher.close()
            await xds_server.stop(0)

        loop.run(stop())
        identity.close()
        app.close()
        loop.close()


def request(port: int) -> tuple[int, str]:
    """One request for ``reviews`` on a new connection to the client sidecar; (0, "") on failure."""
    try:
        client = KeepAlive(port, "reviews")
    except OSError:
        return 0, ""
    try:
        return client.get("/reviews/1")
    except (OSError, AssertionError):
        return 0, ""
    finally:
        client.close()


def until_status(client: KeepAlive, status: int, timeout: float) -> str:
    """Send on the kept connection until it answers ``status``; the body."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < timeout:
        seen = client.get()
        if seen[0] == status:
            return seen[1]
    raise AssertionError(f"no {status} on the kept connection within {timeout}s; last answer {seen}")


def test_mtls_and_authorization_policy_end_to_end(mesh: SecureMesh) -> None:
    seen: list[tuple[int, str]] = []

    def reviews_answers() -> bool:
        seen.append(request(mesh.client_port))
        return seen[-1][0] == 200

    try:
        wait_for(reviews_answers, DEADLINE, "200 from reviews through both sidecars")
    except AssertionError as exc:
        logs = f"client log:\n{mesh.client.log()}\nserver log:\n{mesh.server.log()}"
        raise AssertionError(f"{exc}; last answers {seen[-3:]}\n{logs}") from None
    answer = json.loads(seen[-1][1])
    assert answer["path"] == "/reviews/1"
    assert f"URI={PRODUCTPAGE.uri}" in answer["xfcc"], answer  # the caller's SPIFFE id, over mTLS
    handshakes = mesh.server.stats("ssl.handshake")
    assert sum(v for k, v in handshakes.items() if k.endswith("ssl.handshake")) > 0, handshakes

    client = KeepAlive(mesh.client_port, "reviews")
    try:
        assert client.get()[0] == 200
        accepted = mesh.inbound_connections()
        pushed = time.monotonic()
        mesh.set_overrides(Overrides().with_authorization_policy(DENY_PRODUCTPAGE))
        body = until_status(client, 403, timeout=5)
        denied = time.monotonic() - pushed
        assert body == "RBAC: access denied"
        print(f"\nDENY productpage on the kept connection {denied * 1000:.0f} ms after set_overrides")
        assert denied < 1.0  # ~100 ms debounce + RDS push

        pushed = time.monotonic()
        mesh.set_overrides(Overrides())
        until_status(client, 200, timeout=5)
        restored = time.monotonic() - pushed
        print(f"policy removed: 200 again on the kept connection {restored * 1000:.0f} ms later")
        assert restored < 1.0
        assert mesh.inbound_connections() == accepted, "the reviews sidecar saw new connections"
    finally:
        client.close()
    nodes = mesh.pusher.status()["nodes"]
    assert len(nodes) == 2 and not any(n["error"] for n in nodes.values()), nodes
