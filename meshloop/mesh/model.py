"""The mesh config model: every resource kind meshloop reads, and where each is defined.

Istio's own shapes (``networking.istio.io``, ``security.istio.io``) plus the two
Kubernetes kinds service discovery needs. Each kind lives in its own module; this one
names them and maps ``(apiVersion, kind)`` to a model.
"""

from __future__ import annotations

from meshloop.mesh.base import ObjectMeta, Resource, StringMatch, WorkloadSelector
from meshloop.mesh.destination_rule import DestinationRule, Subset, TrafficPolicy
from meshloop.mesh.duration import Duration
from meshloop.mesh.kubernetes import EndpointSlice, Service
from meshloop.mesh.networking import Gateway, ServiceEntry, WorkloadEntry
from meshloop.mesh.security import AuthorizationPolicy, PeerAuthentication
from meshloop.mesh.virtual_service import HTTPRoute, VirtualService

NETWORKING_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)
SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")

# kind -> (model, accepted apiVersions); the first apiVersion is the preferred one.
KINDS: dict[str, tuple[type[Resource], tuple[str, ...]]] = {
    "VirtualService": (VirtualService, NETWORKING_VERSIONS),
    "DestinationRule": (DestinationRule, NETWORKING_VERSIONS),
    "ServiceEntry": (ServiceEntry, NETWORKING_VERSIONS),
    "Gateway": (Gateway, NETWORKING_VERSIONS),
    "WorkloadEntry": (WorkloadEntry, NETWORKING_VERSIONS),
    "PeerAuthentication": (PeerAuthentication, SECURITY_VERSIONS),
    "AuthorizationPolicy": (AuthorizationPolicy, SECURITY_VERSIONS),
    "Service": (Service, ("v1",)),
    "EndpointSlice": (EndpointSlice, ("discovery.k8s.io/v1",)),
}


def model_for(api_version: str, kind: str) -> type[Resource]:
    """The model for a document's ``apiVersion``/``kind``; ``ValueError`` naming what is accepted."""
    if kind not in KINDS:
        raise ValueError(f'unknown kind "{kind}"; meshloop reads {", ".join(KINDS)}')
    model, versions = KINDS[kind]
    if api_version not in versions:
        raise ValueError(f'apiVersion "{api_version}" is not supported for {kind}; use {versions[0]}')
    return model


__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "Duration",
    "EndpointSlice",
    "Gateway",
    "HTTPRoute",
    "ObjectMeta",
    "PeerAuthentication",
    "Resource",
    "Service",
    "ServiceEntry",
    "StringMatch",
    "Subset",
    "TrafficPolicy",
    "VirtualService",
    "WorkloadEntry",
    "WorkloadSelector",
    "model_for",
]
