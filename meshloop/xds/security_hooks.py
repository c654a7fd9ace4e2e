"""Security plugged into the per-proxy translation: :func:`security_hooks` (pure).

The four :class:`~meshloop.xds.push.Hooks`, from :mod:`meshloop.xds.mtls` and
:mod:`meshloop.xds.rbac`:

* ``inbound_tls`` — the workload's PeerAuthentication mode for the inbound (target) port
  (:func:`~meshloop.xds.mtls.mtls_mode`): STRICT = one TLS chain requiring a client
  certificate from the trust domain, PERMISSIVE = that chain plus plaintext, DISABLE =
  plaintext. https://istio.io/latest/docs/reference/config/security/peer_authentication/
* ``upstream_tls`` — ``ISTIO_MUTUAL`` clusters present the proxy's certificate and check the
  destination's SPIFFE ids (its endpoints' service accounts, else any identity of its
  namespace). With no DestinationRule TLS mode, auto-mTLS applies only when every endpoint of
  the cluster is known to have a sidecar: it carries the label
  ``security.istio.io/tlsMode: istio`` (what Istio's injector puts on pods; set it on a
  WorkloadEntry by hand). Otherwise the cluster stays plaintext — meshloop cannot see
  sidecars, and TLS to a plain app would fail every request. Decided per cluster, not per
  endpoint as Istio does with ``transport_socket_matches``.
* ``inbound_http_filters`` + ``inbound_route_filter_config`` — AuthorizationPolicy per route:
  the constant route-scoped RBAC filters on the listener
  (:func:`~meshloop.xds.rbac.route_scoped_http_filters`, fail closed) and the policies in the
  inbound routes' ``typed_per_filter_config`` (:func:`~meshloop.xds.rbac.route_rbac_override`),
  served over RDS, so a policy change reaches existing connections with the next RDS push.
  https://istio.io/latest/docs/reference/config/security/authorization-policy/

Certificates come from the node agent over SDS (``sds-grpc``), so mTLS (both directions) is
configured only for proxies whose node metadata says ``MESHLOOP_SDS: "true"``
(:attr:`Proxy.sds <meshloop.xds.proxy.Proxy.sds>`); other proxies keep plaintext config,
whose clusters and listeners can warm. RBAC needs no certificate and applies to every sidecar
(principal rules then match nothing, as in Istio without mTLS).
"""

from __future__ import annotations

from typing import Any

from meshloop.xds.mtls import (
    DEFAULT_ROOT_NAMESPACE,
    inbound_filter_chains,
    istio_mutual_transport_socket,
    mtls_mode,
    server_identities,
)
from meshloop.xds.proxy import Proxy
from meshloop.xds.push import DownstreamTls, Hooks, PushContext
from meshloop.xds.rbac import route_rbac_override, route_scoped_http_filters

__all__ = ["SIDECAR_LABEL", "security_hooks", "server_spiffe_ids"]

#: Istio's endpoint label for "this endpoint runs a sidecar" (auto-mTLS).
SIDECAR_LABEL = ("security.istio.io/tlsMode", "istio")


def server_spiffe_ids(
    push: PushContext, proxy: Proxy, host: str, port: int, subset: str | None, trust_domain: str
) -> list[str]:
    """SPIFFE ids the destination may present: its endpoints' service accounts; the namespace
    prefix when one endpoint has none (or there are none)."""
    endpoints = push.registry.endpoints_for(host, port, push.subsets(host, proxy.namespace).get(subset or ""))
    service = push.registry.service(host)
    namespace = service.namespace if service is not None else proxy.namespace
    accounts = [ep.service_account for ep in endpoints]
    if not accounts or None in accounts:
        return server_identities(namespace, (), trust_domain)
    return server_identities(namespace, [a for a in accounts if a], trust_domain)


def _all_have_sidecars(push: PushContext, proxy: Proxy, host: str, port: int, subset: str | None) -> bool:
    labels = push.subsets(host, proxy.namespace).get(subset or "")
    endpoints = push.registry.endpoints_for(host, port, labels)
    key, value = SIDECAR_LABEL
    return bool(endpoints) and all(ep.labels.get(key) == value for ep in endpoints)


def security_hooks(
    trust_domain: str = "cluster.local", root_namespace: str = DEFAULT_ROOT_NAMESPACE
) -> Hooks:
    """mTLS (PeerAuthentication, ISTIO_MUTUAL, auto-mTLS) and AuthorizationPolicy as the
    translation's hooks (see the module doc); pass to ``MeshPusher(cache, hooks=...)``."""

    def upstream_tls(
        proxy: Proxy, push: PushContext, host: str, port: int, subset: str | None, mode: str | None
    ) -> dict[str, Any] | None:
        if not proxy.sds:
            return None
        if mode is None and not _all_have_sidecars(push, proxy, host, port, subset):
            return None
        ids = server_spiffe_ids(push, proxy, host, port, subset, trust_domain)
        return istio_mutual_transport_socket(host, port, subset, ids)

    def inbound_tls(proxy: Proxy, push: PushContext, port: int) -> DownstreamTls | None:
        if not proxy.sds:
            return None
        mode = mtls_mode(
            proxy.namespace, proxy.labels, port, push.config.peer_authentications, root_namespace
        )
        if mode == "DISABLE":
            return None
        # the TLS chain's socket as mtls builds it (ROOTCA, trust-domain SAN prefix, ALPN);
        # lds.py makes the chains around its own HCM
        chain = inbound_filter_chains("STRICT", {}, trust_domains=(trust_domain,))[0]
        return DownstreamTls(chain["transport_socket"], permissive=mode == "PERMISSIVE")

    def inbound_http_filters(proxy: Proxy, push: PushContext, port: int) -> list[dict[str, Any]]:
        return route_scoped_http_filters()

    def inbound_route_filter_config(proxy: Proxy, push: PushContext, port: int) -> dict[str, Any]:
        return route_rbac_override(
            proxy.namespace, proxy.labels, push.authorization_policies, trust_domain, root_namespace
        )

    return Hooks(
        upstream_tls=upstream_tls,
        inbound_tls=inbound_tls,
        inbound_http_filters=inbound_http_filters,
        inbound_route_filter_config=inbound_route_filter_config,
    )
