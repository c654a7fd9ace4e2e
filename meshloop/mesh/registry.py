"""The service registry: services by FQDN host, their ports and endpoints.

Built from Kubernetes ``Service`` + ``EndpointSlice``, ``WorkloadEntry`` (selected by a
Service's selector or a ServiceEntry's ``workloadSelector``) and ``ServiceEntry``
endpoints, the way Istio's service registries aggregate them.
https://istio.io/latest/docs/reference/config/networking/service-entry/
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshloop.mesh.kubernetes import Service
from meshloop.mesh.kubernetes import ServicePort as KubeServicePort
from meshloop.mesh.networking import ServiceEntry, ServiceEntryPort, WorkloadEntry, WorkloadEntrySpec

if TYPE_CHECKING:
    from meshloop.mesh.config import MeshConfig

CLUSTER_DOMAIN = "cluster.local"


def resolve_host(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """Istio's short-name resolution (``ResolveShortnameToFQDN``).

    A name without a dot is relative to the resource's namespace (``reviews`` in
    ``default`` -> ``reviews.default.svc.cluster.local``); ``*``, IP addresses and names
    with a dot are left as written.
    """
    if not host or host == "*" or "." in host or _is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{domain}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_matches(pattern: str, host: str) -> bool:
    """``pattern`` (maybe ``*.example.com`` or ``*``) covers ``host``."""
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


@dataclass(frozen=True)
class ServicePort:
    number: int
    protocol: str
    name: str | None = None
    target_port: int | str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service port. ``labels`` select subsets; ``ready=False`` means unhealthy."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    weight: int = 1
    ready: bool = True
    service_account: str | None = None
    locality: str | None = None


@dataclass(frozen=True)
class RegisteredService:
    """A service host. ``source`` is ``Service`` or ``ServiceEntry``; ``name`` its resource name."""

    host: str
    namespace: str
    source: str
    name: str
    ports: tuple[ServicePort, ...]
    location: str = "MESH_INTERNAL"
    resolution: str = "STATIC"
    addresses: tuple[str, ...] = ()

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.number == number), None)


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _we_endpoint(spec: WorkloadEntrySpec, port: int, port_names: Iterable[str | None]) -> Endpoint | None:
    if not spec.address:
        return None
    number = next((spec.ports[n] for n in port_names if n and n in spec.ports), port)
    return Endpoint(
        address=spec.address,
        port=number,
        labels=dict(spec.labels),
        weight=spec.weight if spec.weight else 1,
        service_account=spec.service_account,
        locality=spec.locality,
    )


@dataclass(frozen=True)
class ServiceRegistry:
    """Services by host and endpoints by ``(host, port number)``; build with :meth:`build`."""

    services: Mapping[str, RegisteredService] = field(default_factory=dict)
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, config: MeshConfig) -> ServiceRegistry:
        """Aggregate a config's registries; a Kubernetes Service wins over a ServiceEntry of the same host."""
        services: dict[str, RegisteredService] = {}
        endpoints: dict[tuple[str, int], list[Endpoint]] = {}
        for svc in config.services:
            services[resolve_host(svc.name, svc.namespace)] = _from_service(svc)
            for key, eps in _service_endpoints(svc, config).items():
                endpoints.setdefault(key, []).extend(eps)
        for se in config.service_entries:
            for host in se.spec.hosts:
                if host in services:
                    continue
                services[host] = _from_service_entry(se, host)
                for key, eps in _service_entry_endpoints(se, host, config.workload_entries).items():
                    endpoints.setdefault(key, []).extend(eps)
        return cls(
            services=dict(sorted(services.items())),
            endpoints={
                k: tuple(sorted(v, key=lambda e: (e.address, e.port))) for k, v in sorted(endpoints.items())
            },
        )

    def service(self, host: str) -> RegisteredService | None:
        """The service for an FQDN host; ServiceEntry wildcard hosts (``*.example.com``) match too."""
        found = self.services.get(host)
        if found is not None:
            return found
        return next(
            (s for h, s in self.services.items() if h.startswith("*") and host_matches(h, host)), None
        )

    def has_host(self, host: str) -> bool:
        return self.service(host) is not None

    def endpoints_for(
        self, host: str, port: int | None = None, subset_labels: Mapping[str, str] | None = None
    ) -> tuple[Endpoint, ...]:
        """Endpoints of ``host`` on service port ``port`` (every port when ``None``) whose labels
        include ``subset_labels``. Not-ready endpoints are included with ``ready=False``."""
        keys = [(host, port)] if port is not None else [k for k in self.endpoints if k[0] == host]
        selector = subset_labels or {}
        return tuple(e for k in keys for e in self.endpoints.get(k, ()) if _selects(selector, e.labels))


_NAMED_PROTOCOLS = (
    "HTTP",
    "HTTP2",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "TCP",
    "TLS",
    "MONGO",
    "MYSQL",
    "REDIS",
    "UDP",
)


def kube_port_protocol(port: KubeServicePort) -> str:
    """Istio's protocol selection for a Kubernetes port: ``appProtocol``, else the port name's
    prefix (``http``, ``http-web``, ``grpc-x``...), else the L4 protocol (Istio would sniff TCP;
    here it stays TCP). https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/
    """
    if port.app_protocol:
        return port.app_protocol.upper()
    prefix = (port.name or "").split("-", 1)[0].upper()
    if prefix in _NAMED_PROTOCOLS:
        return prefix
    return port.protocol


def _from_service(svc: Service) -> RegisteredService:
    ports = tuple(ServicePort(p.port, kube_port_protocol(p), p.name, p.target_port) for p in svc.spec.ports)
    addresses = (svc.spec.cluster_ip,) if svc.spec.cluster_ip and svc.spec.cluster_ip != "None" else ()
    return RegisteredService(
        resolve_host(svc.name, svc.namespace), svc.namespace, "Service", svc.name, ports, addresses=addresses
    )


def _service_endpoints(svc: Service, config: MeshConfig) -> dict[tuple[str, int], list[Endpoint]]:
    host = resolve_host(svc.name, svc.namespace)
    out: dict[tuple[str, int], list[Endpoint]] = {}
    inferred = dict(svc.spec.selector or {})
    for sp in svc.spec.ports:
        eps = out.setdefault((host, sp.port), [])
        for slice_ in config.endpoint_slices:
            if slice_.namespace != svc.namespace or slice_.service_name != svc.name:
                continue
            for slice_port in slice_.ports:
                if (slice_port.name or None) != (sp.name or None) or slice_port.port is None:
                    continue
                for ep in slice_.endpoints:
                    ready = ep.conditions.ready is not False
                    eps.extend(
                        Endpoint(a, slice_port.port, inferred, ready=ready, locality=ep.zone)
                        for a in ep.addresses
                    )
        if svc.spec.selector:
            default = sp.target_port if isinstance(sp.target_port, int) else sp.port
            names = (sp.target_port if isinstance(sp.target_port, str) else None, sp.name)
            for we in _selected(config.workload_entries, svc.namespace, svc.spec.selector):
                endpoint = _we_endpoint(we.spec, default, names)
                if endpoint is not None:
                    eps.append(endpoint)
    return out


def _selected(
    entries: Iterable[WorkloadEntry], namespace: str, selector: Mapping[str, str]
) -> list[WorkloadEntry]:
    return [we for we in entries if we.namespace == namespace and _selects(selector, we.spec.labels)]


def _from_service_entry(se: ServiceEntry, host: str) -> RegisteredService:
    ports = tuple(ServicePort(p.number, p.protocol or "TCP", p.name, p.target_port) for p in se.spec.ports)
    return RegisteredService(
        host,
        se.namespace,
        "ServiceEntry",
        se.name,
        ports,
        location=se.spec.location or "MESH_EXTERNAL",
        resolution=se.spec.resolution or "NONE",
        addresses=se.spec.addresses,
    )


def _service_entry_endpoints(
    se: ServiceEntry, host: str, workload_entries: Iterable[WorkloadEntry]
) -> dict[tuple[str, int], list[Endpoint]]:
    specs = list(se.spec.endpoints)
    if se.spec.workload_selector is not None:
        specs += [
            we.spec
            for we in _selected(workload_entries, se.namespace, se.spec.workload_selector.match_labels)
        ]
    out: dict[tuple[str, int], list[Endpoint]] = {}
    for port in se.spec.ports:
        default = _default_port(port)
        eps = [e for e in (_we_endpoint(s, default, (port.name,)) for s in specs) if e is not None]
        if not specs and se.spec.resolution in ("DNS", "DNS_ROUND_ROBIN") and not host.startswith("*"):
            eps = [Endpoint(host, default)]
        out[(host, port.number)] = eps
    return out


def _default_port(port: ServiceEntryPort) -> int:
    return port.target_port or port.number
