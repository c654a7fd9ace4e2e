"""``PeerAuthentication`` and ``AuthorizationPolicy`` (security.istio.io/v1).

https://istio.io/latest/docs/reference/config/security/peer_authentication/
https://istio.io/latest/docs/reference/config/security/authorization-policy/
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from meshloop.mesh.base import Resource, Strict, WorkloadSelector

MTLSMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTLS(Strict):
    mode: MTLSMode = "UNSET"


class PeerAuthenticationSpec(Strict):
    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: dict[int, MutualTLS] = Field(default_factory=dict)


class PeerAuthentication(Resource):
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


class Source(Strict):
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()


class From(Strict):
    source: Source


class Operation(Strict):
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class To(Strict):
    operation: Operation


class Condition(Strict):
    key: str = Field(min_length=1)
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


class Rule(Strict):
    from_: tuple[From, ...] = Field(default=(), alias="from")
    to: tuple[To, ...] = ()
    when: tuple[Condition, ...] = ()


class AuthorizationPolicySpec(Strict):
    selector: WorkloadSelector | None = None
    target_ref: Any = None
    target_refs: Any = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: Any = None
    rules: tuple[Rule, ...] = ()


class AuthorizationPolicy(Resource):
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)
