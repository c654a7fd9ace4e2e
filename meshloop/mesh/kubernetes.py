"""Kubernetes ``Service`` (v1) and ``EndpointSlice`` (discovery.k8s.io/v1).

Only the fields service discovery needs are typed; the rest of what ``kubectl get -o
yaml`` prints is accepted and ignored.
https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/
https://kubernetes.io/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from meshloop.mesh.base import Labels, PortNumber, Resource, Strict

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
KubeProtocol = Literal["TCP", "UDP", "SCTP"]


class ServicePort(Strict):
    name: str | None = None
    port: PortNumber
    target_port: PortNumber | str | None = None
    protocol: KubeProtocol = "TCP"
    app_protocol: str | None = None
    node_port: int | None = None


class ServiceSpec(Strict):
    selector: Labels | None = None
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: tuple[str, ...] = Field(default=(), alias="clusterIPs")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    external_name: str | None = None
    session_affinity: Any = None
    session_affinity_config: Any = None
    ip_families: Any = None
    ip_family_policy: Any = None
    internal_traffic_policy: Any = None
    external_traffic_policy: Any = None
    publish_not_ready_addresses: bool | None = None
    load_balancer_ip: Any = Field(default=None, alias="loadBalancerIP")
    external_i_ps: Any = Field(default=None, alias="externalIPs")


class Service(Resource):
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class EndpointConditions(Strict):
    """``ready: null`` means ready (Kubernetes API convention)."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ObjectReference(Strict):
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class SliceEndpoint(Strict):
    addresses: tuple[str, ...] = Field(min_length=1)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: Any = None
    deprecated_topology: Any = None


class SlicePort(Strict):
    name: str | None = None
    port: PortNumber | None = None
    protocol: KubeProtocol = "TCP"
    app_protocol: str | None = None


class EndpointSlice(Resource):
    """No ``spec``: the fields sit at the top level, as in Kubernetes."""

    kind: Literal["EndpointSlice"] = "EndpointSlice"
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)
