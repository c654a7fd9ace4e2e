"""``ServiceEntry``, ``Gateway`` and ``WorkloadEntry`` (networking.istio.io/v1).

https://istio.io/latest/docs/reference/config/networking/service-entry/
https://istio.io/latest/docs/reference/config/networking/gateway/
https://istio.io/latest/docs/reference/config/networking/workload-entry/
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from meshloop.mesh.base import Labels, PortNumber, Resource, Strict, WorkloadSelector


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


# Istio reads protocol names case-insensitively (``http`` == ``HTTP``).
Protocol = Annotated[
    Literal[
        "HTTP",
        "HTTPS",
        "GRPC",
        "GRPC-WEB",
        "HTTP2",
        "HTTP_PROXY",
        "MONGO",
        "MYSQL",
        "REDIS",
        "TCP",
        "TLS",
        "UDP",
        "THRIFT",
    ],
    BeforeValidator(_upper),
]


class WorkloadEntrySpec(Strict):
    """One workload instance (a VM, a process on a host port). ``ports`` maps port names to numbers."""

    address: str | None = None
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: Annotated[int, Field(ge=0)] | None = None
    service_account: str | None = None


class WorkloadEntry(Resource):
    kind: Literal["WorkloadEntry"] = "WorkloadEntry"
    spec: WorkloadEntrySpec


class ServiceEntryPort(Strict):
    number: PortNumber
    protocol: Protocol | None = None
    name: str | None = None
    target_port: PortNumber | None = None


class ServiceEntrySpec(Strict):
    hosts: tuple[str, ...] = Field(min_length=1)
    addresses: tuple[str, ...] = ()
    ports: tuple[ServiceEntryPort, ...] = ()
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] | None = None
    endpoints: tuple[WorkloadEntrySpec, ...] = ()
    workload_selector: WorkloadSelector | None = None
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()


class ServiceEntry(Resource):
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    spec: ServiceEntrySpec


class GatewayPort(Strict):
    number: PortNumber
    name: str | None = None
    protocol: Protocol
    target_port: PortNumber | None = None


class ServerTLSSettings(Strict):
    https_redirect: bool | None = None
    mode: (
        Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]
        | None
    ) = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: tuple[str, ...] = ()
    tls_certificates: Any = None
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: tuple[str, ...] = ()


class Server(Strict):
    port: GatewayPort
    bind: str | None = None
    hosts: tuple[str, ...] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class GatewaySpec(Strict):
    selector: Labels = Field(default_factory=dict)
    servers: tuple[Server, ...] = Field(min_length=1)


class Gateway(Resource):
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec
