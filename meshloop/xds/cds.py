"""CDS: Envoy clusters for a proxy (Istio ``BuildClusters``), pure.

* outbound ``outbound|<port>|<subset>|<host>`` for every service x port x (no subset + each
  DestinationRule subset): EDS for Kubernetes Services and ``STATIC`` ServiceEntries,
  ``STRICT_DNS`` (``resolution: DNS``) / ``LOGICAL_DNS`` (``DNS_ROUND_ROBIN``) with the
  endpoints inline, ``ORIGINAL_DST`` for ``resolution: NONE``;
* DestinationRule policies (merged per subset and port): ``lb_policy``, circuit breakers,
  ``connect_timeout``, HTTP protocol options, outlier detection, client TLS;
* inbound ``inbound|<port>||`` (sidecars): the local app at ``<app address>:<port>``.

https://istio.io/latest/docs/reference/config/networking/destination-rule/
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from meshloop.mesh import Endpoint, RegisteredService
from meshloop.mesh.destination_rule import ClientTLSSettings
from meshloop.mesh.registry import ServicePort
from meshloop.xds.protos import (
    ADS_SOURCE,
    HTTP_PROTOCOL_OPTIONS,
    HTTP_PROTOCOL_OPTIONS_KEY,
    UPSTREAM_TLS,
    duration,
    parse,
)
from meshloop.xds.proxy import Proxy, service_instances
from meshloop.xds.push import PushContext, as_dict, cluster_name
from meshloop.xds.traffic_policy import (
    UNLIMITED,
    Policy,
    circuit_breakers,
    effective_policy,
    lb_fields,
    outlier_fields,
)

__all__ = ["ClusterKey", "build_clusters", "outbound_cluster_keys"]

DEFAULT_CONNECT_TIMEOUT_NS = 10_000_000_000  # Istio's default connectTimeout
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
H2_PROTOCOLS = frozenset({"HTTP2", "GRPC"})
TLS_SOCKET = "envoy.transport_sockets.tls"


@dataclass(frozen=True)
class ClusterKey:
    """One outbound cluster: service, port, subset (and its labels)."""

    service: RegisteredService
    port: ServicePort
    subset: str | None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return cluster_name("outbound", self.port.number, self.subset, self.service.host)

    @property
    def discovery(self) -> str:
        """EDS, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST."""
        if self.service.source == "Service" or self.service.resolution == "STATIC":
            return "EDS"
        if self.service.resolution == "DNS":
            return "STRICT_DNS"
        if self.service.resolution == "DNS_ROUND_ROBIN":
            return "LOGICAL_DNS"
        return "ORIGINAL_DST"


def outbound_cluster_keys(proxy: Proxy, push: PushContext) -> list[ClusterKey]:
    """Every outbound cluster the proxy gets, in a deterministic order."""
    keys: list[ClusterKey] = []
    for host, service in push.registry.services.items():
        subsets = push.subsets(host, proxy.namespace)
        for port in service.ports:
            keys.append(ClusterKey(service, port, None))
            keys.extend(ClusterKey(service, port, name, labels) for name, labels in subsets.items())
    return keys


def build_clusters(proxy: Proxy, push: PushContext) -> list[cluster_pb2.Cluster]:
    """Outbound clusters (every proxy) and inbound clusters (sidecars)."""
    clusters = [
        parse(_outbound(proxy, push, key), cluster_pb2.Cluster) for key in outbound_cluster_keys(proxy, push)
    ]
    for instance in service_instances(proxy, push.registry):
        clusters.append(parse(_inbound(proxy, instance.endpoint.port), cluster_pb2.Cluster))
    return clusters


def _outbound(proxy: Proxy, push: PushContext, key: ClusterKey) -> dict[str, Any]:
    host, port = key.service.host, key.port.number
    policy = effective_policy(push.destination_rule(host, proxy.namespace), key.subset, port)
    pool = policy.connection_pool
    connect = pool.tcp.connect_timeout if pool and pool.tcp and pool.tcp.connect_timeout else None
    cluster: dict[str, Any] = {
        "name": key.name,
        "type": key.discovery,
        "connect_timeout": duration(connect.nanos if connect else DEFAULT_CONNECT_TIMEOUT_NS),
        "circuit_breakers": circuit_breakers(pool, push.overrides.circuit_breaker(host, key.subset)),
    }
    if key.discovery == "EDS":
        cluster["eds_cluster_config"] = {"eds_config": ADS_SOURCE, "service_name": key.name}
    elif key.discovery == "ORIGINAL_DST":
        cluster["lb_policy"] = "CLUSTER_PROVIDED"
    else:
        cluster["load_assignment"] = _dns_assignment(key, push.registry.endpoints_for(host, port, key.labels))
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if key.discovery != "ORIGINAL_DST":
        cluster.update(lb_fields(policy.load_balancer))
    outlier = outlier_fields(policy.outlier_detection, push.overrides.outlier(host))
    if outlier is not None:
        cluster["outlier_detection"] = outlier
    if policy.outlier_detection is not None and policy.outlier_detection.min_health_percent is not None:
        cluster["common_lb_config"] = {
            "healthy_panic_threshold": {"value": policy.outlier_detection.min_health_percent}
        }
    if key.port.protocol in HTTP_PROTOCOLS:
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS_KEY: _http_options(policy, key.port)
        }
    socket = _upstream_tls(proxy, push, key, policy.tls)
    if socket is not None:
        cluster["transport_socket"] = socket
    return cluster


def _dns_assignment(key: ClusterKey, endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    ready = [e for e in endpoints if e.ready]
    if key.discovery == "LOGICAL_DNS":
        ready = ready[:1]  # Envoy: a LOGICAL_DNS cluster has exactly one address
    lb = [
        {
            "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
            "load_balancing_weight": e.weight,
        }
        for e in ready
    ]
    return {"cluster_name": key.name, "endpoints": [{"lb_endpoints": lb}] if lb else []}


def _http_options(policy: Policy, port: ServicePort) -> dict[str, Any]:
    common: dict[str, Any] = {}
    http = policy.connection_pool.http if policy.connection_pool else None
    tcp = policy.connection_pool.tcp if policy.connection_pool else None
    if http and http.max_requests_per_connection:
        common["max_requests_per_connection"] = http.max_requests_per_connection
    if http and http.idle_timeout:
        common["idle_timeout"] = duration(http.idle_timeout.nanos)
    if tcp and tcp.max_connection_duration:
        common["max_connection_duration"] = duration(tcp.max_connection_duration.nanos)
    explicit: dict[str, Any] = (
        {"http2_protocol_options": {}} if port.protocol in H2_PROTOCOLS else {"http_protocol_options": {}}
    )
    options: dict[str, Any] = {"@type": HTTP_PROTOCOL_OPTIONS, "explicit_http_config": explicit}
    if common:
        options["common_http_protocol_options"] = common
    return options


def _upstream_tls(
    proxy: Proxy, push: PushContext, key: ClusterKey, tls: ClientTLSSettings | None
) -> dict[str, Any] | None:
    mode = tls.mode if tls else None
    if mode in (None, "ISTIO_MUTUAL"):
        hook = push.hooks.upstream_tls
        socket = hook(proxy, push, key.service.host, key.port.number, key.subset, mode) if hook else None
        return as_dict(socket) if socket is not None else None
    if mode == "DISABLE" or tls is None:
        return None
    return {"name": TLS_SOCKET, "typed_config": simple_tls_context(tls, key.service.host)}


def simple_tls_context(tls: ClientTLSSettings, host: str) -> dict[str, Any]:
    """``UpstreamTlsContext`` for DestinationRule ``tls.mode`` SIMPLE or MUTUAL (files or SDS
    ``credentialName`` over ADS: ``<name>`` for the key pair, ``<name>-cacert`` for the CA)."""
    common: dict[str, Any] = {}
    validation: dict[str, Any] = {}
    if tls.ca_certificates:
        validation["trusted_ca"] = {"filename": tls.ca_certificates}
    if tls.subject_alt_names:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": san}} for san in tls.subject_alt_names
        ]
    if tls.credential_name:
        sds = {"sds_config": ADS_SOURCE}
        if tls.mode == "MUTUAL":
            common["tls_certificate_sds_secret_configs"] = [{"name": tls.credential_name, **sds}]
        if not tls.insecure_skip_verify:
            common["validation_context_sds_secret_config"] = {"name": f"{tls.credential_name}-cacert", **sds}
    elif validation and not tls.insecure_skip_verify:
        common["validation_context"] = validation
    if tls.mode == "MUTUAL" and tls.client_certificate and tls.private_key:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.client_certificate},
                "private_key": {"filename": tls.private_key},
            }
        ]
    return {"@type": UPSTREAM_TLS, "sni": tls.sni or host, "common_tls_context": common}


def _inbound(proxy: Proxy, port: int) -> dict[str, Any]:
    name = cluster_name("inbound", port, None, "")
    address = {"socket_address": {"address": proxy.app_address, "port_value": port}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": duration(DEFAULT_CONNECT_TIMEOUT_NS),
        "circuit_breakers": {
            "thresholds": [
                {
                    k: UNLIMITED
                    for k in ("max_connections", "max_pending_requests", "max_requests", "max_retries")
                }
            ]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
