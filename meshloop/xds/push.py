"""The input of every generator: a proxy-independent ``PushContext`` (Istio's ``PushContext``).

``build_clusters(proxy, push)``, ``build_listeners(proxy, push)``, ``build_routes(proxy, push)``
and ``build_endpoints(proxy, push)`` read the mesh only through this value: the config, the
controllers' :class:`~meshloop.xds.overrides.Overrides`, the :class:`Hooks` other modules plug
in (mTLS transport sockets, RBAC filters), and indexes computed once per config.
https://github.com/istio/istio/blob/master/pilot/pkg/model/push_context.go
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf.message import Message

from meshloop.errors import MeshloopError
from meshloop.mesh import MeshConfig, ServiceRegistry, resolve_host
from meshloop.mesh.destination_rule import DestinationRule
from meshloop.mesh.registry import host_matches
from meshloop.mesh.security import AuthorizationPolicy
from meshloop.mesh.virtual_service import VirtualService
from meshloop.xds.overrides import Overrides
from meshloop.xds.protos import dump

if TYPE_CHECKING:
    from meshloop.xds.proxy import Proxy

__all__ = [
    "MESH_GATEWAY",
    "DownstreamTls",
    "Hooks",
    "PushContext",
    "TranslationError",
    "as_dict",
    "cluster_name",
    "inbound_route_filter_config",
]

MESH_GATEWAY = "mesh"
TYPE_PREFIX = "type.googleapis.com/"

#: a proto3-JSON dict (with ``@type`` on ``Any``) or the protobuf message itself
ConfigLike: TypeAlias = Mapping[str, Any] | Message


class TranslationError(MeshloopError):
    """The mesh could not be turned into a consistent set of Envoy resources for a proxy."""


@dataclass(frozen=True)
class DownstreamTls:
    """What the mTLS hook answers for one inbound port.

    ``transport_socket``: an ``envoy.transport_sockets.tls`` socket (``DownstreamTlsContext``).
    ``permissive``: also accept plaintext (two filter chains split on ``transport_protocol``
    by the TLS inspector, Istio's PERMISSIVE mode).
    """

    transport_socket: ConfigLike
    permissive: bool = False


#: ``upstream_tls(proxy, push, host, port, subset, mode)`` -> transport socket or None (plaintext).
#: Called for outbound clusters whose DestinationRule TLS mode is ``ISTIO_MUTUAL`` or unset
#: (auto mTLS); ``mode`` is that mode or ``None``. SIMPLE/MUTUAL are built here; DISABLE is plaintext.
UpstreamTlsHook = Callable[
    ["Proxy", "PushContext", str, int, "str | None", "str | None"], "ConfigLike | None"
]
#: ``inbound_tls(proxy, push, port)`` -> DownstreamTls or None (plaintext) for an inbound port.
InboundTlsHook = Callable[["Proxy", "PushContext", int], "DownstreamTls | None"]
#: ``inbound_http_filters(proxy, push, port)`` -> HTTP filters placed before the router
#: on the inbound listener of ``port`` (e.g. ``envoy.filters.http.rbac``).
InboundHttpFiltersHook = Callable[["Proxy", "PushContext", int], Sequence[ConfigLike]]
#: ``inbound_route_filter_config(proxy, push, port)`` -> ``typed_per_filter_config`` (filter name
#: -> config) for the inbound routes of ``port``, or None. When it answers, the inbound route
#: configuration is served over RDS (``inbound|<port>||``) instead of inline, so a change of
#: that config (e.g. RBAC per route) is an RDS-only push that reaches existing connections.
InboundRouteFilterConfigHook = Callable[["Proxy", "PushContext", int], "Mapping[str, ConfigLike] | None"]


@dataclass(frozen=True)
class Hooks:
    """Extension points for other modules (mTLS, RBAC). ``None`` = not plugged in.

    :func:`meshloop.xds.security_hooks.security_hooks` plugs in all four."""

    upstream_tls: UpstreamTlsHook | None = None
    inbound_tls: InboundTlsHook | None = None
    inbound_http_filters: InboundHttpFiltersHook | None = None
    inbound_route_filter_config: InboundRouteFilterConfigHook | None = None


def as_dict(value: ConfigLike) -> dict[str, Any]:
    """A hook's answer as proto3 JSON (messages are converted, ``Any`` gets ``@type``)."""
    if isinstance(value, Message):
        return dump(value)
    return dict(value)


def inbound_route_filter_config(proxy: Proxy, push: PushContext, port: int) -> dict[str, Any] | None:
    """The ``inbound_route_filter_config`` hook's answer for ``port`` as proto3 JSON (None: no
    hook, or it answered None — the inbound route then stays inline in the listener)."""
    hook = push.hooks.inbound_route_filter_config
    found = hook(proxy, push, port) if hook else None
    return None if found is None else {name: as_dict(config) for name, config in found.items()}


def cluster_name(direction: str, port: int, subset: str | None, host: str) -> str:
    """Istio's cluster name: ``outbound|9080|v1|reviews.ns.svc.cluster.local``, ``inbound|9080||``."""
    return f"{direction}|{port}|{subset or ''}|{host}"


def _dr_rank(dr: DestinationRule, host: str, proxy_ns: str, service_ns: str) -> tuple[int, int]:
    exact = 0 if resolve_host(dr.spec.host, dr.namespace) == host else 1
    ns = 0 if dr.namespace == proxy_ns else 1 if dr.namespace == service_ns else 2
    return (exact, ns)


@dataclass(frozen=True)
class PushContext:
    """Config + overrides + hooks, with per-config indexes. Pure: build once per config change."""

    config: MeshConfig
    overrides: Overrides = field(default_factory=Overrides)
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def registry(self) -> ServiceRegistry:
        return self.config.registry

    def destination_rule(self, host: str, proxy_namespace: str) -> DestinationRule | None:
        """The DestinationRule for ``host`` as Istio picks it: exact host before wildcard,
        then the proxy's namespace, the service's namespace, any other."""
        service = self.registry.service(host)
        service_ns = service.namespace if service else ""
        found = [
            dr
            for dr in self.config.destination_rules
            if host_matches(resolve_host(dr.spec.host, dr.namespace), host)
        ]
        if not found:
            return None
        return min(found, key=lambda dr: _dr_rank(dr, host, proxy_namespace, service_ns))

    def subsets(self, host: str, proxy_namespace: str) -> dict[str, Mapping[str, str]]:
        """``{subset name: labels}`` of the DestinationRule for ``host``."""
        dr = self.destination_rule(host, proxy_namespace)
        return {s.name: s.labels for s in dr.spec.subsets} if dr else {}

    @cached_property
    def mesh_virtual_services(self) -> dict[str, VirtualService]:
        """VirtualServices bound to sidecars (``gateways`` empty or with ``mesh``) by FQDN host."""
        out: dict[str, VirtualService] = {}
        for vs in self.config.virtual_services:
            if vs.spec.gateways and MESH_GATEWAY not in vs.spec.gateways:
                continue
            for host in vs.spec.hosts:
                out.setdefault(resolve_host(host, vs.namespace), vs)
        return out

    def gateway_virtual_services(self, gateway: str) -> list[VirtualService]:
        """VirtualServices bound to ``ns/name`` (in config order; Istio merges them on gateways)."""
        return [
            vs
            for vs in self.config.virtual_services
            if gateway in (gateway_ref(g, vs.namespace) for g in vs.spec.gateways)
        ]

    @property
    def authorization_policies(self) -> tuple[AuthorizationPolicy, ...]:
        """The user's AuthorizationPolicies followed by the controllers' (overrides)."""
        return self.config.authorization_policies + self.overrides.authorization_policies


def gateway_ref(name: str, namespace: str) -> str:
    """A VirtualService's gateway reference as ``ns/name`` (``mesh`` stays ``mesh``)."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    if "." in name:  # Istio also accepts name.namespace(.svc.cluster.local)
        gw_name, ns = name.split(".")[:2]
        return f"{ns}/{gw_name}"
    return f"{namespace}/{name}"
