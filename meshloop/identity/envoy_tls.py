"""Envoy config pieces for mTLS with secrets from the node agent's SDS socket.

Shapes follow istio-agent's bootstrap: a static cluster ``sds-grpc`` reaching the agent
over a Unix socket (``pipe``) with HTTP/2, and ``SdsSecretConfig`` entries naming
``default`` (own certificate) and ``ROOTCA`` (trust bundle).
https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/transport_sockets/tls/v3/tls.proto

:func:`secure_bootstrap` turns a ``--no-ads`` bootstrap from
:func:`meshloop.xds.bootstrap.build_bootstrap` into an mTLS one (pure: returns a copy):
``inbound`` puts a ``DownstreamTlsContext`` requiring client certificates on the example
listener, accepting peers whose SPIFFE URI SAN matches, and makes the HTTP connection
manager forward the caller's SPIFFE id in ``x-forwarded-client-cert``; ``outbound`` gives
the example upstream cluster an ``UpstreamTlsContext`` that checks the server's SPIFFE id.
"""

from __future__ import annotations

import copy
from typing import Any

from meshloop.identity.sds import ROOT_CA, WORKLOAD_CERT

__all__ = ["SDS_CLUSTER", "sds_cluster", "sds_secret_config", "secure_bootstrap"]

SDS_CLUSTER = "sds-grpc"
_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
_HCM = "envoy.filters.network.http_connection_manager"


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """A static HTTP/2 cluster ``sds-grpc`` to the agent's Unix socket."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def sds_secret_config(name: str) -> dict[str, Any]:
    """``SdsSecretConfig`` for secret ``name`` served on the ``sds-grpc`` cluster."""
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "resource_api_version": "V3",
        },
    }


def _san_matcher(spiffe: str) -> dict[str, Any]:
    """Match a URI SAN: a trailing ``/`` means a prefix (e.g. a whole trust domain)."""
    matcher = {"prefix": spiffe} if spiffe.endswith("/") else {"exact": spiffe}
    return {"san_type": "URI", "matcher": matcher}


def common_tls_context(peer_ids: list[str]) -> dict[str, Any]:
    """Own certificate from ``default``; peers validated by ``ROOTCA`` and their SPIFFE ids."""
    matchers = [_san_matcher(p) for p in peer_ids]
    return {
        "tls_certificate_sds_secret_configs": [sds_secret_config(WORKLOAD_CERT)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": matchers},
            "validation_context_sds_secret_config": sds_secret_config(ROOT_CA),
        },
    }


def downstream_tls(peer_ids: list[str]) -> dict[str, Any]:
    """A listener ``transport_socket`` requiring client certificates from ``peer_ids``."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": common_tls_context(peer_ids),
        },
    }


def upstream_tls(server_ids: list[str]) -> dict[str, Any]:
    """A cluster ``transport_socket`` presenting our certificate, checking the server's id."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "UpstreamTlsContext",
            "common_tls_context": common_tls_context(server_ids),
        },
    }


def secure_bootstrap(
    bootstrap: dict[str, Any],
    socket_path: str,
    *,
    inbound_peers: list[str] | None = None,
    outbound_servers: list[str] | None = None,
    upstream_cluster: str = "example_upstream",
) -> dict[str, Any]:
    """A copy of a static (``--no-ads``) bootstrap with mTLS on the listener and/or cluster.

    ``inbound_peers``: SPIFFE ids (or prefixes ending in ``/``) allowed to call the listener;
    ``None`` leaves the listener plaintext. ``outbound_servers``: ids the upstream cluster's
    server must have; ``None`` leaves the cluster plaintext.
    """
    result = copy.deepcopy(bootstrap)
    static = result["static_resources"]
    static["clusters"].append(sds_cluster(socket_path))
    if inbound_peers is not None:
        for listener in static.get("listeners", []):
            for chain in listener["filter_chains"]:
                chain["transport_socket"] = downstream_tls(inbound_peers)
                for network_filter in chain["filters"]:
                    if network_filter["name"] == _HCM:
                        manager = network_filter["typed_config"]
                        manager["forward_client_cert_details"] = "SANITIZE_SET"
                        manager["set_current_client_cert_details"] = {"uri": True}
    if outbound_servers is not None:
        for cluster in static["clusters"]:
            if cluster["name"] == upstream_cluster:
                cluster["transport_socket"] = upstream_tls(outbound_servers)
    return result
