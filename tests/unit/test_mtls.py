"""PeerAuthentication precedence, inbound filter chains per mode, ISTIO_MUTUAL upstream TLS."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 (registers the type URL)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from meshloop.mesh.destination_rule import DestinationRule
from meshloop.mesh.security import PeerAuthentication
from meshloop.xds.mtls import (
    EffectiveMtls,
    effective_mtls,
    inbound_filter_chains,
    istio_mutual_sni,
    istio_mutual_transport_socket,
    listener_filters,
    mtls_mode,
    outbound_tls_mode,
    server_identities,
)

LABELS = {"app": "backend"}


def pa(
    namespace: str,
    mode: str | None = None,
    selector: dict[str, str] | None = None,
    ports: dict[int, str] | None = None,
    name: str = "pa",
    created: str | None = None,
) -> PeerAuthentication:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {port: {"mode": m} for port, m in ports.items()}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    return PeerAuthentication.model_validate(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": metadata,
            "spec": spec,
        }
    )


MESH_STRICT = pa("istio-system", "STRICT", name="mesh")
NS_PERMISSIVE = pa("shop", "PERMISSIVE", name="ns")
NS_UNSET = pa("shop", "UNSET", name="ns-unset")
WORKLOAD_DISABLE = pa("shop", "DISABLE", {"app": "backend"}, name="wl")


@pytest.mark.parametrize(
    ("policies", "port", "expected"),
    [
        ([], 8080, "PERMISSIVE"),  # Istio's default
        ([MESH_STRICT], 8080, "STRICT"),
        ([MESH_STRICT, NS_PERMISSIVE], 8080, "PERMISSIVE"),  # namespace beats mesh
        ([MESH_STRICT, NS_UNSET], 8080, "STRICT"),  # UNSET inherits
        ([MESH_STRICT, NS_PERMISSIVE, WORKLOAD_DISABLE], 8080, "DISABLE"),  # workload beats namespace
        ([MESH_STRICT, pa("shop", "DISABLE", {"app": "frontend"})], 8080, "STRICT"),  # selector misses
        ([MESH_STRICT, pa("other", "DISABLE")], 8080, "STRICT"),  # another namespace
        ([pa("istio-system", "DISABLE", {"app": "backend"})], 8080, "PERMISSIVE"),  # root + selector: ignored
        ([pa("shop", "PERMISSIVE", {"app": "backend"}, {8080: "STRICT"})], 8080, "STRICT"),
        ([pa("shop", "PERMISSIVE", {"app": "backend"}, {8080: "STRICT"})], 9090, "PERMISSIVE"),
        ([MESH_STRICT, pa("shop", "DISABLE", {"app": "backend"}, {8080: "UNSET"})], 8080, "DISABLE"),
        ([MESH_STRICT, pa("shop", None, {"app": "backend"}, {8080: "PERMISSIVE"})], 9090, "STRICT"),
        ([pa("shop", "STRICT", {}, name="empty-selector")], 8080, "STRICT"),  # {} = namespace-wide
    ],
)
def test_peer_authentication_precedence(policies: list[PeerAuthentication], port: int, expected: str) -> None:
    assert mtls_mode("shop", LABELS, port, policies) == expected


def test_the_oldest_policy_of_a_level_wins_then_the_name() -> None:
    older = pa("shop", "STRICT", name="z", created="2024-01-01T00:00:00Z")
    newer = pa("shop", "DISABLE", name="a", created="2025-01-01T00:00:00Z")
    assert mtls_mode("shop", LABELS, 80, [newer, older]) == "STRICT"
    assert (
        mtls_mode("shop", LABELS, 80, [pa("shop", "DISABLE", name="b"), pa("shop", "STRICT", name="a")])
        == "STRICT"
    )


def test_root_namespace_is_a_parameter() -> None:
    mesh = pa("mesh-root", "STRICT")
    assert mtls_mode("shop", LABELS, 80, [mesh]) == "PERMISSIVE"
    assert mtls_mode("shop", LABELS, 80, [mesh], root_namespace="mesh-root") == "STRICT"


def test_effective_mtls_lists_port_overrides() -> None:
    resolved = effective_mtls("shop", LABELS, [pa("shop", "STRICT", LABELS, {15014: "DISABLE"})])
    assert resolved == EffectiveMtls("STRICT", {15014: "DISABLE"})
    assert resolved.for_port(15014) == "DISABLE" and resolved.for_port(80) == "STRICT"


# --- inbound chains -------------------------------------------------------------------------

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
MANAGER = {
    "@type": HCM_TYPE,
    "stat_prefix": "inbound",
    "route_config": {"name": "inbound", "virtual_hosts": [{"name": "all", "domains": ["*"]}]},
    "http_filters": [
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    ],
}


def listener(mode: str, **kw: Any) -> listener_pb2.Listener:
    config = {
        "name": "inbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "listener_filters": listener_filters(mode),  # type: ignore[arg-type]
        "filter_chains": inbound_filter_chains(mode, MANAGER, **kw),  # type: ignore[arg-type]
    }
    return json_format.ParseDict(config, listener_pb2.Listener())


def downstream(chain: listener_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def manager(chain: listener_pb2.FilterChain) -> hcm.HttpConnectionManager:
    unpacked = hcm.HttpConnectionManager()
    assert chain.filters[0].typed_config.Unpack(unpacked)
    return unpacked


def test_strict_is_one_chain_requiring_a_mesh_certificate() -> None:
    parsed = listener("STRICT")
    assert len(parsed.filter_chains) == 1 and not parsed.listener_filters
    chain = parsed.filter_chains[0]
    context = downstream(chain)
    assert context.require_client_certificate.value
    common = context.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["default"]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == "ROOTCA"
    (san,) = validation.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.prefix == "spiffe://cluster.local/"
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    http = manager(chain)
    assert http.forward_client_cert_details == hcm.HttpConnectionManager.SANITIZE_SET
    assert http.set_current_client_cert_details.uri


def test_permissive_has_tls_and_plaintext_chains_behind_a_tls_inspector() -> None:
    parsed = listener("PERMISSIVE")
    assert [f.name for f in parsed.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    tls, plain = parsed.filter_chains
    assert (
        tls.filter_chain_match.transport_protocol == "tls"
        and downstream(tls).require_client_certificate.value
    )
    assert plain.filter_chain_match.transport_protocol == "raw_buffer"
    assert not plain.HasField("transport_socket")
    assert manager(plain).forward_client_cert_details == hcm.HttpConnectionManager.SANITIZE
    assert not manager(plain).HasField("set_current_client_cert_details")


def test_disable_is_plaintext() -> None:
    parsed = listener("DISABLE")
    (chain,) = parsed.filter_chains
    assert not chain.HasField("transport_socket") and not parsed.listener_filters
    assert manager(chain).forward_client_cert_details == hcm.HttpConnectionManager.SANITIZE


def test_builders_copy_the_manager_and_honour_cluster_and_trust_domains() -> None:
    before = copy.deepcopy(MANAGER)
    parsed = listener("STRICT", sds_socket_cluster="agent", trust_domains=("a.example", "b.example"))
    assert MANAGER == before
    common = downstream(parsed.filter_chains[0]).common_tls_context
    source = common.tls_certificate_sds_secret_configs[0].sds_config.api_config_source
    assert source.grpc_services[0].envoy_grpc.cluster_name == "agent"
    sans = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert [s.matcher.prefix for s in sans] == ["spiffe://a.example/", "spiffe://b.example/"]
    whole_filter = {"name": "envoy.filters.network.http_connection_manager", "typed_config": MANAGER}
    assert inbound_filter_chains("DISABLE", whole_filter) == inbound_filter_chains("DISABLE", MANAGER)
    with pytest.raises(ValueError, match="unknown mTLS mode"):
        inbound_filter_chains("MUTUAL", MANAGER)  # type: ignore[arg-type]


# --- outbound ---------------------------------------------------------------------------------


def test_istio_mutual_socket_checks_the_server_identity_with_istio_sni() -> None:
    socket = istio_mutual_transport_socket(
        "reviews.shop.svc.cluster.local", 9080, "v1", server_identities("shop", ["reviews"])
    )
    cluster = json_format.ParseDict(
        {
            "name": "outbound|9080|v1|reviews.shop.svc.cluster.local",
            "type": "EDS",
            "transport_socket": socket,
        },
        cluster_pb2.Cluster(),
    )
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "outbound_.9080_.v1_.reviews.shop.svc.cluster.local"
    common = context.common_tls_context
    assert common.tls_certificate_sds_secret_configs[0].name == "default"
    (san,) = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert san.san_type == san.URI and san.matcher.exact == "spiffe://cluster.local/ns/shop/sa/reviews"


def test_server_identities_fall_back_to_the_namespace_prefix() -> None:
    assert server_identities("shop") == ["spiffe://cluster.local/ns/shop/"]
    assert server_identities("shop", ["b", "a", "b"], "corp") == [
        "spiffe://corp/ns/shop/sa/a",
        "spiffe://corp/ns/shop/sa/b",
    ]
    socket = istio_mutual_transport_socket("h", 80, None, server_identities("shop"))
    sans = socket["typed_config"]["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ]
    assert sans["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/ns/shop/"}}
    ]
    assert istio_mutual_sni("h", 80) == "outbound_.80_._.h"
    with pytest.raises(ValueError, match="at least one"):
        istio_mutual_transport_socket("h", 80, None, [])


def destination_rule(spec: dict[str, Any]) -> DestinationRule:
    return DestinationRule.model_validate(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "dr", "namespace": "shop"},
            "spec": {"host": "reviews", **spec},
        }
    )


DR = destination_rule(
    {
        "trafficPolicy": {
            "tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 9443}, "tls": {"mode": "SIMPLE"}}],
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {
                    "tls": {"mode": "DISABLE"},
                    "portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "MUTUAL"}}],
                },
            },
        ],
    }
)


@pytest.mark.parametrize(
    ("port", "subset", "expected"),
    [
        (9080, None, "ISTIO_MUTUAL"),
        (9443, None, "SIMPLE"),  # rule port-level beats rule
        (9080, "v1", "ISTIO_MUTUAL"),  # subset without policy inherits
        (9443, "v2", "DISABLE"),  # subset beats rule port-level
        (9080, "v2", "MUTUAL"),  # subset port-level beats subset
    ],
)
def test_outbound_tls_mode_precedence(port: int, subset: str | None, expected: str) -> None:
    assert outbound_tls_mode(DR, port, subset) == expected


def test_outbound_tls_mode_unset() -> None:
    assert outbound_tls_mode(None, 80) is None
    assert outbound_tls_mode(destination_rule({}), 80, "v1") is None
