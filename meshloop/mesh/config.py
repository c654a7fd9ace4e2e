"""``MeshConfig``: one immutable, deterministic value holding every loaded resource."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from meshloop.mesh.base import Resource
from meshloop.mesh.destination_rule import DestinationRule
from meshloop.mesh.issues import FieldPath, parse_path
from meshloop.mesh.kubernetes import EndpointSlice, Service
from meshloop.mesh.networking import Gateway, ServiceEntry, WorkloadEntry
from meshloop.mesh.security import AuthorizationPolicy, PeerAuthentication
from meshloop.mesh.virtual_service import VirtualService

if TYPE_CHECKING:
    from meshloop.mesh.registry import ServiceRegistry

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class DocumentSource:
    """Where a document came from: its file, first line, and the line of every field path."""

    file: str
    line: int
    field_lines: Mapping[FieldPath, int] = field(default_factory=dict, repr=False)

    def line_of(self, path: FieldPath) -> int:
        """Line of ``path``, or of its nearest present ancestor, or of the document."""
        for end in range(len(path), 0, -1):
            line = self.field_lines.get(path[:end])
            if line is not None:
                return line
        return self.line


def _sort_key(resource: Resource) -> tuple[str, str]:
    return (resource.namespace, resource.name)


@dataclass(frozen=True)
class MeshConfig:
    """Every resource of a mesh, a tuple per kind sorted by (namespace, name, file, line).

    ``sources`` maps each resource's ``(kind, namespace, name)`` to the documents that
    define it (several when a name is duplicated, which validation reports).
    """

    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    service_entries: tuple[ServiceEntry, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    workload_entries: tuple[WorkloadEntry, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    sources: Mapping[tuple[str, str, str], tuple[tuple[Resource, DocumentSource], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, loaded: Iterable[tuple[Resource, DocumentSource | None]]) -> MeshConfig:
        """Group resources by kind in a deterministic order (namespace, name, file, line)."""
        items = sorted(
            loaded,
            key=lambda rs: (_sort_key(rs[0]), (rs[1].file, rs[1].line) if rs[1] else ("", 0)),
        )
        sources: dict[tuple[str, str, str], tuple[tuple[Resource, DocumentSource], ...]] = {}
        for resource, source in items:
            if source is not None:
                sources[resource.key] = sources.get(resource.key, ()) + ((resource, source),)
        resources = [r for r, _ in items]

        def of(model: type[R]) -> tuple[R, ...]:
            return tuple(r for r in resources if isinstance(r, model))

        return cls(
            virtual_services=of(VirtualService),
            destination_rules=of(DestinationRule),
            service_entries=of(ServiceEntry),
            gateways=of(Gateway),
            workload_entries=of(WorkloadEntry),
            peer_authentications=of(PeerAuthentication),
            authorization_policies=of(AuthorizationPolicy),
            services=of(Service),
            endpoint_slices=of(EndpointSlice),
            sources=sources,
        )

    @property
    def resources(self) -> tuple[Resource, ...]:
        """All resources, kind by kind in the order of the fields above."""
        return (
            *self.virtual_services,
            *self.destination_rules,
            *self.service_entries,
            *self.gateways,
            *self.workload_entries,
            *self.peer_authentications,
            *self.authorization_policies,
            *self.services,
            *self.endpoint_slices,
        )

    def counts(self) -> dict[str, int]:
        """Number of resources by kind (every kind present, zeros included)."""
        from meshloop.mesh.model import KINDS

        out = dict.fromkeys(KINDS, 0)
        for r in self.resources:
            out[r.kind] += 1
        return out

    def document_of(self, resource: Resource) -> DocumentSource | None:
        entries = self.sources.get(resource.key, ())
        for candidate, source in entries:
            if candidate is resource:
                return source
        return entries[0][1] if entries else None

    def source_of(self, resource: Resource, field_path: str | FieldPath = "") -> tuple[str, int]:
        """``(file, line)`` of a field (``"spec.http[0].route"`` or a tuple path) of a resource.

        Falls back to the nearest ancestor present in the file, then to the document;
        ``("", 0)`` for a resource that did not come from a file.
        """
        source = self.document_of(resource)
        if source is None:
            return ("", 0)
        path = parse_path(field_path) if isinstance(field_path, str) else field_path
        return (source.file, source.line_of(path))

    @cached_property
    def version(self) -> str:
        """A hash of the resources' deterministic serialization (not of their files)."""
        digest = hashlib.sha256()
        for r in self.resources:
            data = r.model_dump(mode="json", by_alias=True, exclude_none=True)
            digest.update(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
            digest.update(b"\n")
        return digest.hexdigest()[:16]

    @cached_property
    def registry(self) -> ServiceRegistry:
        """The service registry built from this config's Services, endpoints and ServiceEntries."""
        from meshloop.mesh.registry import ServiceRegistry

        return ServiceRegistry.build(self)
