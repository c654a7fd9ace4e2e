"""security_hooks() in the per-proxy translation: mTLS only with SDS, RBAC per route over RDS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshloop.mesh import MeshConfig, load_and_validate
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from meshloop.xds.cache import NodeInfo
from meshloop.xds.generate import build_snapshot
from meshloop.xds.protos import dump
from meshloop.xds.proxy import Proxy, proxy_from_node
from meshloop.xds.push import PushContext
from meshloop.xds.rbac import FILTER_NAMES
from meshloop.xds.resources import CLUSTER, LISTENER, ROUTE
from meshloop.xds.security_hooks import security_hooks

BASE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9081}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec:
  address: 10.0.0.2
  ports: {http: 9081}
  labels: {app: reviews, version: v1%(label)s}
  serviceAccount: reviews
"""
PA = """
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: %s}}
"""
DR = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews, trafficPolicy: {tls: {mode: %s}}}
"""
DENY = """
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-pp, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]}]
"""
OUT = "outbound|9080||reviews.shop.svc.cluster.local"


def mesh(tmp_path: Path, text: str) -> MeshConfig:
    (tmp_path / "mesh.yaml").write_text(text)
    config, issues = load_and_validate([tmp_path / "mesh.yaml"])
    assert config is not None, [i.render() for i in issues]
    return config


def server(sds: bool) -> Proxy:
    return Proxy("sidecar", "sidecar~10.0.0.2~reviews.shop~shop.svc.cluster.local", "shop",
                 {"app": "reviews", "version": "v1"}, ip="10.0.0.2", sds=sds)  # fmt: skip


def resources(proxy: Proxy, config: MeshConfig) -> dict[str, dict[str, dict[str, Any]]]:
    snap = build_snapshot(proxy, PushContext(config, hooks=security_hooks()))
    names = {CLUSTER: "CDS", LISTENER: "LDS", ROUTE: "RDS"}
    return {
        short: {n: dump(r.message) for n, r in snap.get(url).by_name.items()} for url, short in names.items()
    }


@pytest.mark.parametrize(
    ("mode", "sds", "chains"),
    [
        ("STRICT", True, ["tls"]),
        ("PERMISSIVE", True, ["tls", "raw_buffer"]),
        ("DISABLE", True, [None]),
        ("STRICT", False, [None]),  # no agent: plaintext, else the listener never warms
    ],
)
def test_inbound_mtls_follows_peer_authentication_only_with_sds(
    tmp_path: Path, mode: str, sds: bool, chains: list[str | None]
) -> None:
    res = resources(server(sds), mesh(tmp_path, BASE % {"label": ""} + PA % mode))
    listener = res["LDS"]["inbound_10.0.0.2_9081"]
    got = [c.get("filter_chain_match", {}).get("transport_protocol") for c in listener["filter_chains"]]
    assert got == chains
    assert ["transport_socket" in c for c in listener["filter_chains"]] == [c == "tls" for c in chains]
    assert ("listener_filters" in listener) == (chains != [None])


def test_rbac_is_route_scoped_and_the_policy_travels_in_rds(tmp_path: Path) -> None:
    res = resources(server(False), mesh(tmp_path, BASE % {"label": ""} + DENY))
    hcm = res["LDS"]["inbound_10.0.0.2_9081"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]][:3] == list(FILTER_NAMES.values())
    assert hcm["rds"]["route_config_name"] == "inbound|9081||" and "route_config" not in hcm
    vhost = res["RDS"]["inbound|9081||"]["virtual_hosts"][0]
    per_filter = vhost["typed_per_filter_config"]
    assert set(per_filter) == set(FILTER_NAMES.values())
    assert "rbac" in per_filter[FILTER_NAMES["DENY"]] and "rbac" not in per_filter[FILTER_NAMES["ALLOW"]]
    assert vhost["routes"][0]["route"]["cluster"] == "inbound|9081||"


@pytest.mark.parametrize(
    ("dr", "label", "sds", "mtls"),
    [
        ("ISTIO_MUTUAL", "", True, True),
        ("ISTIO_MUTUAL", "", False, False),
        (None, "", True, False),  # unset, no sign of a sidecar: plaintext
        (None, ", security.istio.io/tlsMode: istio", True, True),  # auto-mTLS
        ("DISABLE", ", security.istio.io/tlsMode: istio", True, False),
    ],
)
def test_outbound_istio_mutual_and_auto_mtls(
    tmp_path: Path, dr: str | None, label: str, sds: bool, mtls: bool
) -> None:
    config = mesh(tmp_path, BASE % {"label": label} + (DR % dr if dr else ""))
    client = Proxy("sidecar", "sidecar~10.0.0.9~pp.shop~shop.svc.cluster.local", "shop", {"app": "pp"},
                   ip="10.0.0.9", sds=sds)  # fmt: skip
    cluster = resources(client, config)["CDS"][OUT]
    assert ("transport_socket" in cluster) == mtls
    if mtls:
        context = cluster["transport_socket"]["typed_config"]
        sans = context["common_tls_context"]["combined_validation_context"]["default_validation_context"]
        assert sans["match_typed_subject_alt_names"] == [
            {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/reviews"}}
        ]
        assert context["sni"] == f"outbound_.9080_._.{OUT.split('|')[3]}"


def test_bootstrap_sds_socket_marks_the_node() -> None:
    boot = build_bootstrap(BootstrapOptions(admin_port=9901, sds_socket="/tmp/agent.sock"))
    assert "sds-grpc" in [c["name"] for c in boot["static_resources"]["clusters"]]
    node = NodeInfo(id=boot["node"]["id"], cluster="c", metadata=boot["node"]["metadata"])
    assert proxy_from_node(node).sds
    plain = build_bootstrap(BootstrapOptions(admin_port=9901))
    assert "MESHLOOP_SDS" not in plain["node"]["metadata"]
    assert not proxy_from_node(
        NodeInfo(id=plain["node"]["id"], cluster="c", metadata=plain["node"]["metadata"])
    ).sds
