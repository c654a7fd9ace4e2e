"""RDS: route configurations for a proxy (Istio ``BuildHTTPRoutes``), pure.

Sidecars: one ``RouteConfiguration`` per outbound HTTP port, named by the port (``"9080"``),
with a virtual host per service on that port (domains: FQDN, short name, ``name.ns``,
``name.ns.svc``, each with and without ``:port``, and the service's addresses; a domain is
used once, the proxy's namespace first). Routes: the host's VirtualService (``gateways``
empty or ``mesh``) in order, else Istio's ``default`` route.

Gateways: one ``RouteConfiguration`` per Gateway server port, ``http.<port>`` (HTTPS
servers: ``https.<port>.<server>.<gateway>.<namespace>``), a virtual host per host of the
VirtualServices bound to the gateway that a server host covers; their routes are merged.

Sidecars' inbound HTTP ports: :func:`inbound_route_config` (``inbound|<port>||``, one ``*``
virtual host to the local app). Inline in the inbound listener, unless the
``inbound_route_filter_config`` hook answers for the port: then it is served here, over RDS,
with the hook's ``typed_per_filter_config`` on its virtual host (RBAC per route, so a policy
change is an RDS-only push that reaches existing connections).

Controllers' :class:`~meshloop.xds.overrides.RouteWeights` replace destinations first.
https://istio.io/latest/docs/reference/config/networking/virtual-service/
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route.proto
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_pb2

from meshloop.mesh import RegisteredService, resolve_host
from meshloop.mesh.base import ObjectMeta
from meshloop.mesh.networking import Gateway, Server
from meshloop.mesh.registry import host_matches
from meshloop.mesh.virtual_service import (
    Destination,
    HTTPRoute,
    HTTPRouteDestination,
    VirtualService,
    VirtualServiceSpec,
)
from meshloop.xds.cds import HTTP_PROTOCOLS
from meshloop.xds.http_route import RouteScope, default_route, translate_http_route
from meshloop.xds.overrides import RouteWeights
from meshloop.xds.protos import parse
from meshloop.xds.proxy import Proxy, service_instances
from meshloop.xds.push import PushContext, cluster_name, inbound_route_filter_config

__all__ = [
    "GatewayServer",
    "build_routes",
    "gateway_servers",
    "inbound_route_config",
    "sidecar_http_ports",
]

OVERRIDE_VS = "meshloop-override"


@dataclass(frozen=True)
class GatewayServer:
    """One Gateway server this gateway proxy serves, and the route configuration it uses."""

    gateway: Gateway
    server: Server
    index: int

    @property
    def ref(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"

    @property
    def tls_terminated(self) -> bool:
        tls = self.server.tls
        return tls is not None and tls.mode not in (None, "PASSTHROUGH", "AUTO_PASSTHROUGH")

    @property
    def is_http(self) -> bool:
        protocol = self.server.port.protocol
        return protocol in HTTP_PROTOCOLS or (protocol in ("HTTPS", "TLS") and self.tls_terminated)

    @property
    def route_name(self) -> str:
        port = self.server.port.number
        if self.server.port.protocol in HTTP_PROTOCOLS:
            return f"http.{port}"
        label = self.server.port.name or self.server.name or str(self.index)
        return f"https.{port}.{label}.{self.gateway.name}.{self.gateway.namespace}"

    def hosts(self) -> list[str]:
        """Server hosts without their ``namespace/`` prefix."""
        return [h.split("/", 1)[1] if "/" in h else h for h in self.server.hosts]


def gateway_servers(proxy: Proxy, push: PushContext) -> list[GatewayServer]:
    """Servers of the Gateways whose selector the proxy's labels satisfy (an empty selector
    selects the gateway proxies of the Gateway's namespace)."""
    if proxy.role != "gateway":
        return []
    out: list[GatewayServer] = []
    for gw in push.config.gateways:
        selector = gw.spec.selector
        if selector and any(proxy.labels.get(k) != v for k, v in selector.items()):
            continue
        if not selector and gw.namespace != proxy.namespace:
            continue
        out.extend(GatewayServer(gw, server, i) for i, server in enumerate(gw.spec.servers))
    return out


def sidecar_http_ports(push: PushContext) -> list[int]:
    """Service ports with an HTTP protocol, across the registry."""
    return sorted(
        {p.number for s in push.registry.services.values() for p in s.ports if p.protocol in HTTP_PROTOCOLS}
    )


def build_routes(proxy: Proxy, push: PushContext) -> list[route_pb2.RouteConfiguration]:
    """Route configurations the proxy's listeners load over RDS."""
    configs = _gateway_configs(proxy, push) if proxy.role == "gateway" else _sidecar_configs(proxy, push)
    return [parse(c, route_pb2.RouteConfiguration) for c in configs]


# --- sidecars ------------------------------------------------------------------------------


def _domains(service: RegisteredService, port: int) -> list[str]:
    host = service.host
    names = [host]
    suffix = f".{service.namespace}.svc."
    if service.source == "Service" and suffix in host:
        short = host.split(".")[0]
        names += [short, f"{short}.{service.namespace}", f"{short}.{service.namespace}.svc"]
    names += list(service.addresses)
    return [d for n in names for d in (n, f"{n}:{port}")]


def inbound_route_config(port: int, filter_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The route configuration of inbound port ``port``: everything to ``inbound|<port>||``;
    ``filter_config`` becomes the virtual host's ``typed_per_filter_config`` (every route)."""
    cluster = cluster_name("inbound", port, None, "")
    vhost: dict[str, Any] = {
        "name": f"inbound|http|{port}",
        "domains": ["*"],
        "routes": [
            {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
        ],
    }
    if filter_config is not None:
        vhost["typed_per_filter_config"] = filter_config
    return {"name": cluster, "virtual_hosts": [vhost]}


def _inbound_configs(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    """Inbound route configurations served over RDS (those the hook answers for)."""
    configs = []
    for instance in service_instances(proxy, push.registry):
        port = instance.endpoint.port
        if instance.port.protocol not in HTTP_PROTOCOLS:
            continue
        filter_config = inbound_route_filter_config(proxy, push, port)
        if filter_config is not None:
            configs.append(inbound_route_config(port, filter_config))
    return configs


def _sidecar_configs(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    configs = _inbound_configs(proxy, push)
    services = sorted(push.registry.services.values(), key=lambda s: (s.namespace != proxy.namespace, s.host))
    for port in sidecar_http_ports(push):
        scope = RouteScope(proxy, push, port)
        used: set[str] = set()
        hosts = []
        for service in services:
            sp = service.port(port)
            if sp is None or sp.protocol not in HTTP_PROTOCOLS:
                continue
            domains = [d for d in _domains(service, port) if d not in used]
            used.update(domains)
            if not domains:
                continue
            routes = _service_routes(service.host, scope)
            hosts.append({"name": f"{service.host}:{port}", "domains": domains, "routes": routes})
        configs.append(_route_config(str(port), hosts, proxy))
    return configs


def _service_routes(host: str, scope: RouteScope) -> list[dict[str, Any]]:
    vs = scope.push.mesh_virtual_services.get(host)
    entries = scope.push.overrides.weights_for(host)
    if vs is None or not vs.spec.http:
        if not entries:
            return [default_route(cluster_name("outbound", scope.port, None, host))]
        vs = _synthetic(host)
    http = _with_weights(vs, host, entries, catch_all=True)
    return [r for h in http for r in translate_http_route(vs, h, scope)]


def _synthetic(host: str) -> VirtualService:
    """An empty VirtualService for ``host`` that weight overrides fill."""
    return VirtualService(
        api_version="networking.istio.io/v1",
        metadata=ObjectMeta(name=OVERRIDE_VS, namespace="default"),
        spec=VirtualServiceSpec(hosts=(host,)),
    )


# --- weight overrides ------------------------------------------------------------------------


def _goes_only_to(http: HTTPRoute, host: str, namespace: str) -> bool:
    return bool(http.route) and all(resolve_host(d.destination.host, namespace) == host for d in http.route)


def _targets(http: HTTPRoute, entry: RouteWeights, namespace: str) -> bool:
    if not _goes_only_to(http, entry.host, namespace):
        return False
    return http.name == entry.route if entry.route is not None else not http.match


def _reweighted(http: HTTPRoute | None, entry: RouteWeights) -> HTTPRoute:
    old = {d.destination.subset: d for d in (http.route if http else ())}
    port = next((d.destination.port for d in old.values() if d.destination.port), None)
    dests = tuple(
        HTTPRouteDestination(
            destination=Destination(host=entry.host, subset=subset, port=port),
            weight=weight,
            headers=old[subset].headers if subset in old else None,
        )
        for subset, weight in entry.weights
    )
    if http is None:
        return HTTPRoute(name=OVERRIDE_VS, route=dests)
    return http.model_copy(update={"route": dests})


def _with_weights(
    vs: VirtualService, host: str, entries: Sequence[RouteWeights], catch_all: bool
) -> list[HTTPRoute]:
    """``vs``'s HTTP routes with the override entries' destinations swapped in; with
    ``catch_all`` a weighted catch-all is appended for an entry (without ``route``) that
    found no route."""
    http = list(vs.spec.http)
    for entry in entries:
        hits = [i for i, h in enumerate(http) if _targets(h, entry, vs.namespace)]
        for i in hits:
            http[i] = _reweighted(http[i], entry)
        if not hits and entry.route is None and catch_all:
            http.append(_reweighted(None, entry))
    return http


# --- gateways ------------------------------------------------------------------------------


def _gateway_configs(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    by_route: dict[str, list[GatewayServer]] = {}
    for gs in gateway_servers(proxy, push):
        if gs.is_http:
            by_route.setdefault(gs.route_name, []).append(gs)
    return [
        _route_config(name, _gateway_hosts(proxy, push, servers), proxy, gateway=True)
        for name, servers in sorted(by_route.items())
    ]


def _gateway_hosts(proxy: Proxy, push: PushContext, servers: list[GatewayServer]) -> list[dict[str, Any]]:
    port = servers[0].server.port.number
    routes_by_host: dict[str, list[dict[str, Any]]] = {}
    redirect: set[str] = set()
    for gs in servers:
        scope = RouteScope(proxy, push, port, gateway=gs.ref)
        for vs in push.gateway_virtual_services(gs.ref):
            for vs_host in vs.spec.hosts:
                if not any(host_matches(h, vs_host) for h in gs.hosts()):
                    continue
                routes = routes_by_host.setdefault(vs_host, [])
                for h in _gateway_http(vs, push):
                    routes.extend(translate_http_route(vs, h, scope))
                if gs.server.tls is not None and gs.server.tls.https_redirect:
                    redirect.add(vs_host)
    hosts, used = [], set()
    for vs_host in sorted(routes_by_host):
        domains = ["*"] if vs_host == "*" else [vs_host, f"{vs_host}:{port}"]
        domains = [d for d in domains if d not in used]
        used.update(domains)
        if not domains:
            continue
        vhost: dict[str, Any] = {
            "name": f"{vs_host}:{port}",
            "domains": domains,
            "routes": routes_by_host[vs_host],
        }
        if vs_host in redirect:
            vhost["require_tls"] = "ALL"
        hosts.append(vhost)
    return hosts


def _gateway_http(vs: VirtualService, push: PushContext) -> list[HTTPRoute]:
    http = list(vs.spec.http)
    hosts = {resolve_host(d.destination.host, vs.namespace) for h in http for d in h.route}
    for host in sorted(hosts):
        entries = push.overrides.weights_for(host)
        if entries:
            http = _with_weights(
                vs.model_copy(update={"spec": vs.spec.model_copy(update={"http": tuple(http)})}),
                host,
                entries,
                catch_all=False,
            )
    return http


def _route_config(
    name: str, hosts: list[dict[str, Any]], proxy: Proxy, gateway: bool = False
) -> dict[str, Any]:
    config: dict[str, Any] = {"name": name, "virtual_hosts": hosts, "validate_clusters": False}
    if gateway or proxy.outbound_port_offset:
        config["ignore_port_in_host_matching"] = True
    return config
