"""Snapshots: an immutable, versioned set of Envoy resources for one proxy (or a group).

Modelled on go-control-plane's ``cache/v3.Snapshot``
(https://github.com/envoyproxy/go-control-plane/blob/main/pkg/cache/v3/snapshot.go):
resources by type URL and name, a version per type, and :meth:`Snapshot.consistent`
checking that every name LDS/CDS/RDS refer to exists before the snapshot is published.

Every resource is packed into a ``google.protobuf.Any`` once, at :meth:`Snapshot.build`;
all streams share those. Versions are content hashes of the deterministic serialization
(``SerializeToString(deterministic=True)``), so equal content gives equal versions
whatever the insertion order, and an unchanged type is never pushed again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshloop.errors import MeshloopError
from meshloop.xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    cluster_eds_name,
    content_hash,
    listener_inline_routes,
    listener_route_names,
    resource_name,
    route_cluster_names,
    short_name,
    type_url_of,
)

__all__ = ["InconsistentSnapshot", "PreparedResource", "Snapshot", "TypedResources", "delta_diff"]


class InconsistentSnapshot(MeshloopError):
    """A snapshot refers to resources it does not hold, or holds a resource twice."""

    def __init__(self, problems: list[str], where: str = "snapshot") -> None:
        self.problems = problems
        super().__init__(f"{where} is inconsistent: " + "; ".join(problems))


@dataclass(frozen=True)
class PreparedResource:
    """One resource, packed once: its name, per-resource version (content hash) and ``Any``.

    ``message`` is the original protobuf; treat it (and ``packed``) as read-only.
    """

    name: str
    version: str
    packed: any_pb2.Any
    message: Message

    def delta_resource(self) -> discovery_pb2.Resource:
        """This resource as a delta ``Resource`` (name, version, the shared ``Any``)."""
        return discovery_pb2.Resource(name=self.name, version=self.version, resource=self.packed)


@dataclass(frozen=True)
class TypedResources:
    """All resources of one type URL, by name, with the type's version."""

    type_url: str
    version: str
    by_name: Mapping[str, PreparedResource]

    def select(self, names: Collection[str] | None) -> list[PreparedResource]:
        """Resources named in ``names`` (all when ``None``), sorted by name."""
        if names is None:
            return [self.by_name[n] for n in sorted(self.by_name)]
        return [self.by_name[n] for n in sorted(names) if n in self.by_name]


def _prepare(type_url: str, messages: Iterable[Message]) -> TypedResources:
    by_name: dict[str, PreparedResource] = {}
    for message in messages:
        if type_url_of(message) != type_url:
            raise InconsistentSnapshot(
                [f"a {type_url_of(message)} was given under {short_name(type_url)} ({type_url})"]
            )
        name = resource_name(message)
        if name in by_name:
            raise InconsistentSnapshot([f"{short_name(type_url)} resource {name!r} appears twice"])
        serialized = message.SerializeToString(deterministic=True)
        packed = any_pb2.Any(type_url=type_url, value=serialized)
        by_name[name] = PreparedResource(name, content_hash(serialized), packed, message)
    parts: list[bytes] = [type_url.encode()]
    for name in sorted(by_name):
        parts += [name.encode(), by_name[name].packed.value]
    return TypedResources(type_url, content_hash(*parts), MappingProxyType(by_name))


@dataclass(frozen=True)
class Snapshot:
    """An immutable set of resources per type URL. Build it with :meth:`build`.

    Every type of :data:`~meshloop.xds.resources.PUSH_ORDER` is present (maybe empty), so a
    proxy asking for a type the snapshot does not fill still gets an (empty) answer.
    """

    types: Mapping[str, TypedResources]
    # consistent()'s answers by external cluster set: a snapshot shared by many proxies is
    # checked once, not once per proxy (the value is immutable, so the answer is too)
    _checked: dict[frozenset[str], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def build(cls, resources: Mapping[str, Iterable[Message]]) -> Snapshot:
        """Pack and version ``{type_url: [message, ...]}``; raises :class:`InconsistentSnapshot`
        on a duplicate name or a message of the wrong type (not on dangling references:
        see :meth:`consistent`)."""
        types = {url: _prepare(url, resources.get(url, ())) for url in PUSH_ORDER}
        types.update({url: _prepare(url, msgs) for url, msgs in resources.items() if url not in types})
        return cls(MappingProxyType(types))

    def version(self, type_url: str) -> str:
        """The type's version: a hash of its resources' names and deterministic bytes."""
        return self.get(type_url).version

    def get(self, type_url: str) -> TypedResources:
        """Resources of one type (empty for a type the snapshot does not know)."""
        found = self.types.get(type_url)
        return found if found is not None else _prepare(type_url, ())

    def versions(self) -> dict[str, str]:
        """``{type_url: version}`` for every type."""
        return {url: typed.version for url, typed in self.types.items()}

    def names(self, type_url: str) -> set[str]:
        return set(self.get(type_url).by_name)

    def consistent(self, external_clusters: Collection[str] = ()) -> list[str]:
        """Dangling references, as messages naming the resource (empty list = consistent).

        Like go-control-plane's ``Snapshot.Consistent``: every RDS name an LDS listener's
        HCM loads exists; every EDS assignment a CDS cluster loads exists; and every
        cluster a route (RDS or inline) sends to exists in CDS or ``external_clusters``
        (the bootstrap's static clusters).
        """
        key = frozenset(external_clusters)
        if key not in self._checked:
            self._checked[key] = tuple(self._problems(key))
        return list(self._checked[key])

    def _problems(self, external_clusters: frozenset[str]) -> list[str]:
        problems: list[str] = []
        routes, clusters = self.names(ROUTE), self.names(CLUSTER) | external_clusters
        assignments = self.names(ENDPOINT)
        configs = [r.message for r in self.get(ROUTE).by_name.values()]
        for item in self.get(LISTENER).by_name.values():
            assert isinstance(item.message, listener_pb2.Listener)
            for route_name in listener_route_names(item.message):
                if route_name not in routes:
                    problems.append(f"listener {item.name!r} uses route config {route_name!r}, not in RDS")
            configs.extend(listener_inline_routes(item.message))
        for item in self.get(CLUSTER).by_name.values():
            assert isinstance(item.message, cluster_pb2.Cluster)
            eds_name = cluster_eds_name(item.message)
            if eds_name is not None and eds_name not in assignments:
                problems.append(f"EDS cluster {item.name!r} needs load assignment {eds_name!r}, not in EDS")
        for config in configs:
            assert isinstance(config, route_pb2.RouteConfiguration)
            for cluster in route_cluster_names(config):
                if cluster not in clusters:
                    problems.append(f"route config {config.name!r} sends to cluster {cluster!r}, not in CDS")
        return problems


def delta_diff(
    known: Mapping[str, str], typed: TypedResources, names: Collection[str] | None
) -> tuple[list[PreparedResource], list[str]]:
    """What a delta stream must send: (resources new or changed against ``known`` — the
    client's ``{name: version}`` — and names in ``known`` that are gone or unsubscribed).

    ``names`` is the subscription (``None`` = wildcard).
    https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds
    """
    wanted = typed.select(names)
    changed = [r for r in wanted if known.get(r.name) != r.version]
    present = {r.name for r in wanted}
    removed = sorted(n for n in known if n not in present)
    return changed, removed
