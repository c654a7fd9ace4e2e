"""xDS resource types: type URLs, push order, names and cross-references of Envoy resources.

Type URLs and wildcard semantics follow the xDS protocol
(https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#resource-types):
Listener and Cluster requests with no names (or ``*``) mean "all"; Route and
Endpoint (and Secret) requests name what they want.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "SHORT_NAMES",
    "WILDCARD_TYPES",
    "content_hash",
    "listener_route_names",
    "cluster_eds_name",
    "pack",
    "resource_name",
    "route_cluster_names",
    "short_name",
    "type_url_of",
]

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
HCM_TYPE = _PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

#: make-before-break: clusters before the endpoints they load, before the listeners and
#: routes that use them (Istio's ``PushOrder``); secrets last.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
#: types whose empty subscription means "everything"
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})
SHORT_NAMES: dict[str, str] = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
MESSAGE_CLASSES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}


def short_name(type_url: str) -> str:
    """``LDS``/``RDS``/``CDS``/``EDS``/``SDS`` for a known type URL, else the message name."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def type_url_of(message: Message) -> str:
    """The type URL of a resource message (``type.googleapis.com/<full name>``)."""
    return _PREFIX + message.DESCRIPTOR.full_name


def resource_name(message: Message) -> str:
    """A resource's xDS name: ``cluster_name`` for a ClusterLoadAssignment, else ``name``."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return str(message.name)  # type: ignore[attr-defined]


def pack(message: Message) -> any_pb2.Any:
    """``google.protobuf.Any`` holding the message's deterministic serialization."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def content_hash(*parts: bytes) -> str:
    """A short, stable version string: the first 16 hex digits of SHA-256 over ``parts``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def _managers(listener: listener_pb2.Listener) -> Iterator[hcm.HttpConnectionManager]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url == HCM_TYPE:
                manager = hcm.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                yield manager


def listener_route_names(listener: listener_pb2.Listener) -> list[str]:
    """Route configurations a listener loads over RDS (its HCMs' ``rds.route_config_name``)."""
    return [m.rds.route_config_name for m in _managers(listener) if m.HasField("rds")]


def listener_inline_routes(listener: listener_pb2.Listener) -> list[route_pb2.RouteConfiguration]:
    """Route configurations embedded in a listener's HCMs (``route_config``)."""
    return [m.route_config for m in _managers(listener) if m.HasField("route_config")]


def cluster_eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The ClusterLoadAssignment an EDS cluster asks for (``service_name`` or its own name);
    ``None`` for other discovery types."""
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return cluster.eds_cluster_config.service_name or cluster.name


def route_cluster_names(config: route_pb2.RouteConfiguration) -> list[str]:
    """Clusters a route configuration sends traffic to (``cluster`` and ``weighted_clusters``)."""
    names: list[str] = []
    for host in config.virtual_hosts:
        for route in host.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.HasField("cluster"):
                names.append(action.cluster)
            elif action.HasField("weighted_clusters"):
                names.extend(c.name for c in action.weighted_clusters.clusters)
    return names
