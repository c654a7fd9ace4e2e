"""A proxy's whole configuration: :func:`build_resources` / :func:`build_snapshot` (pure),
and :class:`MeshPusher` (re-exported from :mod:`meshloop.xds.pusher`), which keeps every
connected proxy's snapshot current as the mesh config and overrides change.
"""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf.message import Message

from meshloop.mesh import MeshConfig
from meshloop.xds.cds import build_clusters
from meshloop.xds.eds import build_endpoints
from meshloop.xds.lds import build_listeners
from meshloop.xds.overrides import Overrides
from meshloop.xds.proxy import Proxy
from meshloop.xds.push import Hooks, PushContext, TranslationError
from meshloop.xds.push_index import indexed
from meshloop.xds.rds import build_routes
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshloop.xds.snapshot import InconsistentSnapshot, Snapshot
from meshloop.xds.telemetry import COLLECTOR_CLUSTER

__all__ = ["BOOTSTRAP_CLUSTERS", "MeshPusher", "build_resources", "build_snapshot"]

#: clusters every meshloop bootstrap defines statically (see :mod:`meshloop.xds.bootstrap`)
BOOTSTRAP_CLUSTERS: frozenset[str] = frozenset({COLLECTOR_CLUSTER, "meshloop_xds"})


def build_resources(proxy: Proxy, push: PushContext) -> dict[str, list[Message]]:
    """``{type_url: [messages]}`` for CDS, EDS, LDS and RDS (Istio's four generators)."""
    return {
        CLUSTER: list(build_clusters(proxy, push)),
        ENDPOINT: list(build_endpoints(proxy, push)),
        LISTENER: list(build_listeners(proxy, push)),
        ROUTE: list(build_routes(proxy, push)),
    }


def build_snapshot(
    proxy: Proxy,
    config: MeshConfig | PushContext,
    overrides: Overrides | None = None,
    hooks: Hooks | None = None,
    external_clusters: Collection[str] = BOOTSTRAP_CLUSTERS,
) -> Snapshot:
    """The proxy's snapshot; raises :class:`TranslationError` (overrides the config cannot
    honour, a resource twice, or a dangling reference — each named) instead of returning an
    inconsistent one. Pass a :class:`PushContext` to reuse its indexes across proxies."""
    push = indexed(
        config
        if isinstance(config, PushContext)
        else PushContext(config, overrides or Overrides(), hooks or Hooks())
    )
    where = f"proxy {proxy.id}"
    problems = push.overrides.problems(push.config)
    if problems:
        raise TranslationError(f"{where}: overrides: " + "; ".join(problems))
    try:
        snapshot = Snapshot.build(build_resources(proxy, push))
    except InconsistentSnapshot as exc:
        raise TranslationError(f"{where}: {exc}") from exc
    dangling = snapshot.consistent(external_clusters)
    if dangling:
        raise TranslationError(f"{where}: snapshot is inconsistent: " + "; ".join(dangling))
    return snapshot


from meshloop.xds.pusher import MeshPusher  # noqa: E402  (pusher uses build_snapshot)
