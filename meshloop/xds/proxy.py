"""Who a connected Envoy is: a frozen :class:`Proxy` from its node id and metadata.

Istio's node id is ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`` with
type ``sidecar`` or ``router`` (gateways); metadata carries ``NAMESPACE``, ``LABELS``,
``WORKLOAD_NAME``, ``INSTANCE_IPS`` (https://istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/).
meshloop adds ``MESHLOOP_ROLE``, ``MESHLOOP_SDS`` (``"true"`` when the bootstrap has the node
agent's ``sds-grpc`` cluster, ``meshloop bootstrap --sds-socket``: only then may the proxy's
config use mesh certificates; without it, TLS clusters and listeners would never warm) and,
because test and demo Envoys share one host without iptables interception, where listeners bind:

=============================== ====================================== =====================
metadata key                    meaning                                default
=============================== ====================================== =====================
``MESHLOOP_OUTBOUND_ADDRESS``   bind address of outbound / gateway     127.0.0.1 (sidecar),
                                listeners                              0.0.0.0 (gateway)
``MESHLOOP_OUTBOUND_PORT_OFFSET`` added to every outbound / gateway    0
                                listener port (route names keep the
                                service port: ``9080``, ``http.80``)
``MESHLOOP_INBOUND_ADDRESS``    bind address of inbound listeners      the proxy's IP
``MESHLOOP_INBOUND_PORT_OFFSET``  added to inbound listener ports       0
``MESHLOOP_APP_ADDRESS``        where inbound clusters send (the app)  127.0.0.1
=============================== ====================================== =====================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshloop.mesh import Endpoint, RegisteredService, ServiceRegistry
from meshloop.mesh.registry import ServicePort
from meshloop.xds.cache import NodeInfo

__all__ = ["Proxy", "ServiceInstance", "parse_node_id", "proxy_from_node", "service_instances"]

Role = Literal["sidecar", "gateway"]


@dataclass(frozen=True)
class Proxy:
    """A proxy's identity, listener placement (see the module table) and whether it can reach a
    node agent for its certificates over SDS (``sds``, from ``MESHLOOP_SDS``)."""

    role: Role
    id: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    ip: str = "127.0.0.1"
    workload: str = ""
    outbound_address: str = ""
    outbound_port_offset: int = 0
    inbound_address: str = ""
    inbound_port_offset: int = 0
    app_address: str = "127.0.0.1"
    sds: bool = False

    @property
    def outbound_bind(self) -> str:
        return self.outbound_address or ("0.0.0.0" if self.role == "gateway" else "127.0.0.1")

    @property
    def inbound_bind(self) -> str:
        return self.inbound_address or self.ip


def parse_node_id(node_id: str) -> tuple[Role, str, str, str]:
    """``(role, ip, pod, namespace)`` from an Istio node id; ``ValueError`` when malformed."""
    parts = node_id.split("~")
    if len(parts) != 4 or parts[0] not in ("sidecar", "router"):
        raise ValueError(
            f"node id {node_id!r} is not Istio's <sidecar|router>~<ip>~<pod>.<namespace>~<domain>"
        )
    pod, _, namespace = parts[2].partition(".")
    if not namespace:
        namespace = parts[3].split(".")[0] or "default"
    return ("sidecar" if parts[0] == "sidecar" else "gateway"), parts[1], pod, namespace


def guess_labels(pod: str) -> dict[str, str]:
    """``app`` (and ``version``) from a Kubernetes-style pod name (``reviews-v2-5c7f-x``), used
    only when the node sends no ``LABELS``."""
    parts = pod.split("-")
    labels = {"app": parts[0]} if parts[0] else {}
    if len(parts) > 1 and parts[1][:1] == "v" and parts[1][1:].isdigit():
        labels["version"] = parts[1]
    return labels


def _int(metadata: Mapping[str, Any], key: str) -> int:
    value = metadata.get(key, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"node metadata {key} must be an integer, got {value!r}") from None


def _flag(metadata: Mapping[str, Any], key: str) -> bool:
    value = metadata.get(key, False)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f'node metadata {key} must be "true" or "false", got {value!r}')


def proxy_from_node(node: NodeInfo, role: Role | None = None) -> Proxy:
    """The proxy a node describes; metadata wins over the node id, ``role`` over both."""
    meta = node.metadata
    try:
        id_role, ip, pod, id_ns = parse_node_id(node.id)
    except ValueError:
        if not meta.get("NAMESPACE"):
            raise
        id_role, ip, pod, id_ns = "sidecar", "127.0.0.1", str(meta.get("NAME", node.id)), "default"
    meta_role = meta.get("MESHLOOP_ROLE")
    resolved: Role = role or (
        "gateway" if meta_role in ("gateway", "router") else "sidecar" if meta_role else id_role
    )
    ips = str(meta.get("INSTANCE_IPS") or ip).split(",")
    labels = meta.get("LABELS")
    return Proxy(
        role=resolved,
        id=node.id,
        namespace=str(meta.get("NAMESPACE") or id_ns),
        labels=dict(labels) if isinstance(labels, Mapping) else guess_labels(pod),
        ip=ips[0].strip() or ip,
        workload=str(meta.get("WORKLOAD_NAME") or pod),
        outbound_address=str(meta.get("MESHLOOP_OUTBOUND_ADDRESS") or ""),
        outbound_port_offset=_int(meta, "MESHLOOP_OUTBOUND_PORT_OFFSET"),
        inbound_address=str(meta.get("MESHLOOP_INBOUND_ADDRESS") or ""),
        inbound_port_offset=_int(meta, "MESHLOOP_INBOUND_PORT_OFFSET"),
        app_address=str(meta.get("MESHLOOP_APP_ADDRESS") or "127.0.0.1"),
        sds=_flag(meta, "MESHLOOP_SDS"),
    )


@dataclass(frozen=True)
class ServiceInstance:
    """One of the proxy's own service ports and the endpoint that is this proxy."""

    service: RegisteredService
    port: ServicePort
    endpoint: Endpoint


def service_instances(proxy: Proxy, registry: ServiceRegistry) -> list[ServiceInstance]:
    """The proxy's own services: registry endpoints at the proxy's IP whose labels the proxy's
    labels include (Istio's ``ServiceInstances``). Sorted by endpoint port, then host; one
    instance per endpoint port (the first host wins)."""
    if proxy.role != "sidecar" or not proxy.labels:
        return []
    out: dict[int, ServiceInstance] = {}
    for host, service in registry.services.items():
        for port in service.ports:
            for ep in registry.endpoints_for(host, port.number):
                if ep.address != proxy.ip or not ep.labels:
                    continue
                if all(proxy.labels.get(k) == v for k, v in ep.labels.items()):
                    out.setdefault(ep.port, ServiceInstance(service, port, ep))
    return [out[p] for p in sorted(out)]
