"""The service registry: FQDN resolution, ports, endpoints from every source."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshloop.mesh import load, resolve_host

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("host", "namespace", "fqdn"),
    [
        ("reviews", "bookinfo", "reviews.bookinfo.svc.cluster.local"),
        ("reviews.bookinfo", "default", "reviews.bookinfo"),  # has a dot: left as written (Istio)
        ("reviews.bookinfo.svc.cluster.local", "x", "reviews.bookinfo.svc.cluster.local"),
        ("*", "x", "*"),
        ("*.example.com", "x", "*.example.com"),
        ("10.0.0.1", "x", "10.0.0.1"),
        ("::1", "x", "::1"),
    ],
)
def test_resolve_host(host: str, namespace: str, fqdn: str) -> None:
    assert resolve_host(host, namespace) == fqdn


def test_bookinfo_endpoints_by_subset() -> None:
    config, _ = load([ROOT / "examples" / "bookinfo"])
    reg = config.registry
    host = "reviews.bookinfo.svc.cluster.local"
    assert [e.port for e in reg.endpoints_for(host, 9080)] == [9084, 9085, 9086]
    assert [e.port for e in reg.endpoints_for(host, 9080, {"version": "v2"})] == [9085]
    assert reg.endpoints_for(host, 9080, {"version": "v9"}) == ()
    assert reg.endpoints_for(host, 1234) == ()
    assert [
        (e.address, e.port) for e in reg.endpoints_for("productpage.bookinfo.svc.cluster.local", 9080)
    ] == [("127.0.0.1", 9081)]
    svc = reg.service(host)
    assert svc is not None and svc.port(9080) is not None and svc.port(9080).protocol == "HTTP"  # type: ignore[union-attr]


MIXED = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: grpc-api, port: 8080, targetPort: 9000}
  - {name: metrics, port: 9090, appProtocol: http}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: grpc-api, port: 9000}, {name: metrics, port: 9091}]
endpoints:
- {addresses: [10.0.0.1, 10.0.0.2]}
- {addresses: [10.0.0.3], conditions: {ready: false}, zone: z1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 192.168.0.9, labels: {app: web, version: vm}, weight: 5}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-ns, namespace: elsewhere}
spec: {address: 192.168.0.10, labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com, "*.cdn.example.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 6432}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {matchLabels: {role: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1, namespace: shop}
spec: {address: 10.1.0.1, labels: {role: db}, ports: {pg: 7432}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-2, namespace: shop}
spec: {address: 10.1.0.2, labels: {role: db}}
"""


def test_sources_combine(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MIXED)
    config, issues = load([tmp_path])
    assert issues == []
    reg = config.registry
    web = "web.shop.svc.cluster.local"
    eps = reg.endpoints_for(web, 8080)
    assert [(e.address, e.port, e.ready, e.weight) for e in eps] == [
        ("10.0.0.1", 9000, True, 1),
        ("10.0.0.2", 9000, True, 1),
        ("10.0.0.3", 9000, False, 1),
        ("192.168.0.9", 9000, True, 5),
    ]
    assert dict(eps[0].labels) == {"app": "web"}  # inferred from the selector
    assert [e.port for e in reg.endpoints_for(web, 9090)] == [9091, 9091, 9091, 9090]
    assert [e.address for e in reg.endpoints_for(web, None, {"version": "vm"})] == ["192.168.0.9"] * 2
    ports = reg.services[web].ports
    assert [(p.number, p.protocol) for p in ports] == [(8080, "GRPC"), (9090, "HTTP")]
    assert [(e.address, e.port) for e in reg.endpoints_for("api.example.com", 443)] == [
        ("api.example.com", 443)
    ]
    assert reg.endpoints_for("*.cdn.example.com", 443) == ()
    assert reg.has_host("img.cdn.example.com") and not reg.has_host("cdn.example.com")
    assert [(e.address, e.port) for e in reg.endpoints_for("db.internal", 5432)] == [
        ("10.1.0.1", 7432),
        ("10.1.0.2", 6432),
    ]
    assert reg.services["db.internal"].resolution == "STATIC"


def test_kubernetes_service_wins_over_service_entry_of_same_host(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\n"
        "spec: {hosts: [a.default.svc.cluster.local], ports: [{number: 81, name: x}]}\n"
    )
    config, _ = load([tmp_path])
    assert config.registry.services["a.default.svc.cluster.local"].source == "Service"
