"""Envoy bootstraps pointing an Envoy at meshloop: node identity, collector, xDS.

:func:`build_bootstrap` is pure: :class:`BootstrapOptions` in, a JSON-ready dict in
Envoy's proto3-JSON field names out (https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/bootstrap/v3/bootstrap.proto).
It holds

* the node, named after Istio's convention (``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``,
  ``router~...`` for gateways) with Istio-like metadata (``NAMESPACE``, ``WORKLOAD_NAME``,
  ``LABELS``, ``MESH_ID``, ``CLUSTER_ID``) from which the collector derives the reporter;
* static clusters ``meshloop_collector`` (access logs, metrics, traces) and
  ``meshloop_xds`` (ADS), both HTTP/2;
* ``dynamic_resources.ads_config`` (SotW ``GRPC`` or ``DELTA_GRPC``) with LDS and CDS
  over ADS — or, with ``ads=False``, a static example listener routing to a static
  upstream, with a gRPC access logger attached (an Envoy that reports without xDS);
* a stat sink (metrics service or OpenTelemetry) flushing every ``stats_flush_interval``;
* with ``sds_socket``, the node agent's static cluster ``sds-grpc`` (Unix socket, HTTP/2;
  :func:`meshloop.identity.envoy_tls.sds_cluster`) and node metadata ``MESHLOOP_SDS: "true"``,
  which tells the xDS translation that this proxy can get mesh certificates (mTLS).

Access loggers cannot be put on dynamic listeners from here; the xDS translator
reuses :func:`http_grpc_access_log` and friends from :mod:`meshloop.xds.telemetry`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from meshloop.errors import ConfigError
from meshloop.identity.envoy_tls import sds_cluster
from meshloop.xds.telemetry import (
    COLLECTOR_CLUSTER,
    access_log_entry,
    duration,
    http_grpc_access_log,
    metrics_service_sink,
    otel_access_log,
    otel_stats_sink,
    otel_tracing,
    tcp_grpc_access_log,
)

__all__ = [
    "COLLECTOR_CLUSTER",
    "XDS_CLUSTER",
    "BootstrapOptions",
    "add_bootstrap_command",
    "build_bootstrap",
    "http_grpc_access_log",
    "node_id",
    "otel_access_log",
    "render",
    "tcp_grpc_access_log",
]

XDS_CLUSTER = "meshloop_xds"
UPSTREAM_CLUSTER = "example_upstream"
EXAMPLE_LISTENER = "example_http"

Role = Literal["sidecar", "gateway"]
AdsApi = Literal["GRPC", "DELTA_GRPC"]
StatsSink = Literal["metrics_service", "open_telemetry", "none"]
AccessLogKind = Literal["http_grpc", "open_telemetry"]

_TYPE = "type.googleapis.com/"
_NODE_TYPE = {"sidecar": "sidecar", "gateway": "router"}


@dataclass(frozen=True)
class BootstrapOptions:
    """Everything a bootstrap depends on. ``None`` means "derive it" (node id, cluster, pod).

    Durations are seconds. ``listen_port``/``upstream_port`` are required with ``ads=False``.
    ``sds_socket``: the node agent's SDS Unix socket (``meshloop agent --sds-socket``).
    """

    admin_port: int
    role: Role = "sidecar"
    node_id: str | None = None
    node_cluster: str | None = None
    workload: str = "app"
    namespace: str = "default"
    version: str = "v1"
    pod: str | None = None
    ip: str = "127.0.0.1"
    mesh_id: str = "meshloop"
    cluster_id: str = "Kubernetes"
    admin_address: str = "127.0.0.1"
    meshloop_host: str = "127.0.0.1"
    collector_port: int = 4317
    xds_port: int = 15010
    ads: bool = True
    ads_api: AdsApi = "GRPC"
    stats_sink: StatsSink = "metrics_service"
    stats_flush_interval: float = 5.0
    access_log: AccessLogKind = "http_grpc"
    access_log_flush_interval: float = 1.0
    access_log_buffer_bytes: int = 16384
    listen_port: int | None = None
    listen_address: str = "127.0.0.1"
    upstream_port: int | None = None
    upstream_host: str = "127.0.0.1"
    tracing: bool = False
    connect_timeout: float = 1.0
    extra_labels: tuple[tuple[str, str], ...] = field(default=())
    sds_socket: str | None = None

    def __post_init__(self) -> None:
        for key in ("admin_port", "collector_port", "xds_port", "listen_port", "upstream_port"):
            port = getattr(self, key)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError("bootstrap", key, f"{port} is not a TCP port (0-65535)")
        for key in ("stats_flush_interval", "access_log_flush_interval", "connect_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError("bootstrap", key, f"must be > 0 seconds, got {getattr(self, key)}")
        if self.role not in _NODE_TYPE:
            raise ConfigError("bootstrap", "role", f"{self.role!r} is not one of sidecar, gateway")
        if not self.ads and (self.listen_port is None or self.upstream_port is None):
            raise ConfigError(
                "bootstrap",
                "ads",
                "without ADS, listen_port and upstream_port are required (--listen-port, --upstream-port)",
            )
        if self.sds_socket is not None and not self.sds_socket:
            raise ConfigError("bootstrap", "sds_socket", "must be a Unix socket path, got an empty string")
        if self.ads and self.tracing:
            raise ConfigError(
                "bootstrap",
                "tracing",
                "with ADS, tracing belongs on the listeners meshloop pushes; use it with --no-ads",
            )

    @property
    def pod_name(self) -> str:
        return self.pod or self.workload


def node_id(options: BootstrapOptions) -> str:
    """Istio's node id: ``<sidecar|router>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``.

    https://istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/ (the ``NAME`` column).
    """
    if options.node_id:
        return options.node_id
    ns = options.namespace
    return f"{_NODE_TYPE[options.role]}~{options.ip}~{options.pod_name}.{ns}~{ns}.svc.cluster.local"


def node(options: BootstrapOptions) -> dict[str, Any]:
    """``config.core.v3.Node`` with Istio-like metadata naming workload, namespace, version.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/base.proto#config-core-v3-node
    """
    labels = {
        "app": options.workload,
        "version": options.version,
        "service.istio.io/canonical-name": options.workload,
        "service.istio.io/canonical-revision": options.version,
        **dict(options.extra_labels),
    }
    metadata: dict[str, Any] = {
        "NAME": options.pod_name,
        "NAMESPACE": options.namespace,
        "WORKLOAD_NAME": options.workload,
        "LABELS": labels,
        "MESH_ID": options.mesh_id,
        "CLUSTER_ID": options.cluster_id,
        "INSTANCE_IPS": options.ip,
        "MESHLOOP_ROLE": options.role,
    }
    if options.sds_socket:
        metadata["MESHLOOP_SDS"] = "true"
    return {
        "id": node_id(options),
        "cluster": options.node_cluster or f"{options.workload}.{options.namespace}",
        "metadata": metadata,
    }


def resource_attributes(options: BootstrapOptions) -> dict[str, str]:
    """OpenTelemetry resource attributes identifying this node (semantic conventions)."""
    return {
        "service.name": options.workload,
        "service.namespace": options.namespace,
        "service.version": options.version,
        "service.instance.id": node_id(options),
        "k8s.namespace.name": options.namespace,
        "k8s.pod.name": options.pod_name,
        "meshloop.role": options.role,
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def static_cluster(
    name: str, host: str, port: int, connect_timeout: float, http2: bool = False
) -> dict[str, Any]:
    """A cluster of one endpoint: STATIC for an IP, STRICT_DNS (IPv4 preferred) for a name.

    ``http2`` enables HTTP/2 upstream (required for gRPC) through
    ``envoy.extensions.upstreams.http.v3.HttpProtocolOptions``.
    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto
    """
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": duration(connect_timeout),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }
    if not _is_ip(host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
        cluster["upstream_connection_options"] = {"tcp_keepalive": {"keepalive_time": 300}}
    return cluster


def ads_resources(options: BootstrapOptions) -> dict[str, Any]:
    """``dynamic_resources``: LDS and CDS over one ADS stream to ``meshloop_xds``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/bootstrap/v3/bootstrap.proto#config-bootstrap-v3-bootstrap-dynamicresources
    """
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "ads_config": {
            "api_type": options.ads_api,
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            "set_node_on_first_message_only": True,
        },
        "lds_config": ads_source,
        "cds_config": dict(ads_source),
    }


def _example_access_log(options: BootstrapOptions) -> dict[str, Any]:
    flush, size = options.access_log_flush_interval, options.access_log_buffer_bytes
    if options.access_log == "open_telemetry":
        config = otel_access_log(
            flush_interval=flush, buffer_size_bytes=size, resource_attributes=resource_attributes(options)
        )
    else:
        config = http_grpc_access_log(flush_interval=flush, buffer_size_bytes=size)
    return access_log_entry(config)


def example_listener(options: BootstrapOptions) -> dict[str, Any]:
    """A static HTTP listener on ``listen_port`` routing everything to the example upstream.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
    """
    assert options.listen_port is not None  # checked by BootstrapOptions
    manager: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": EXAMPLE_LISTENER,
        "codec_type": "AUTO",
        "route_config": {
            "name": "example_route",
            "virtual_hosts": [
                {
                    "name": "example",
                    "domains": ["*"],
                    "routes": [
                        {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
        "access_log": [_example_access_log(options)],
    }
    if options.tracing:
        manager["tracing"] = otel_tracing(options.workload, resource_attributes(options))
    return {
        "name": EXAMPLE_LISTENER,
        "address": _address(options.listen_address, options.listen_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


def _stats_sinks(options: BootstrapOptions) -> list[dict[str, Any]]:
    if options.stats_sink == "metrics_service":
        return [metrics_service_sink()]
    if options.stats_sink == "open_telemetry":
        return [otel_stats_sink(resource_attributes(options))]
    return []


def build_bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The whole bootstrap for ``options`` (pure; JSON-serializable).

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/bootstrap/v3/bootstrap.proto
    """
    timeout = options.connect_timeout
    clusters = [
        static_cluster(COLLECTOR_CLUSTER, options.meshloop_host, options.collector_port, timeout, http2=True)
    ]
    bootstrap: dict[str, Any] = {
        "node": node(options),
        "admin": {"address": _address(options.admin_address, options.admin_port)},
        "static_resources": {"clusters": clusters},
        "stats_flush_interval": duration(options.stats_flush_interval),
    }
    if options.ads:
        clusters.append(static_cluster(XDS_CLUSTER, options.meshloop_host, options.xds_port, timeout, True))
        bootstrap["dynamic_resources"] = ads_resources(options)
    else:
        assert options.upstream_port is not None  # checked by BootstrapOptions
        upstream = static_cluster(UPSTREAM_CLUSTER, options.upstream_host, options.upstream_port, timeout)
        clusters.append(upstream)
        bootstrap["static_resources"]["listeners"] = [example_listener(options)]
    if options.sds_socket:
        clusters.append(sds_cluster(options.sds_socket))
    sinks = _stats_sinks(options)
    if sinks:
        bootstrap["stats_sinks"] = sinks
    return bootstrap


def render(bootstrap: dict[str, Any], fmt: Literal["json", "yaml"] = "json") -> str:
    """Serialize a bootstrap; Envoy reads ``*.json`` as JSON and ``*.yaml`` as YAML."""
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(bootstrap, sort_keys=False)
    return json.dumps(bootstrap, indent=2) + "\n"


def add_bootstrap_command(subparsers: Any) -> None:
    """Register ``meshloop bootstrap`` on an argparse ``add_subparsers()`` object.

    Sets ``handler`` to a function(args) -> exit code that prints (or writes) the bootstrap.
    The flags are documented in :mod:`meshloop.xds.bootstrap_cli`.
    """
    from meshloop.xds.bootstrap_cli import register

    register(subparsers)
