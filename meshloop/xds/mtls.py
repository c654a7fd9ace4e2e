"""Istio ``PeerAuthentication`` and ``ISTIO_MUTUAL`` → Envoy TLS config (pure).

* :func:`effective_mtls` / :func:`mtls_mode` resolve a workload's mode per port as Istio's
  ``ComposePeerAuthentication`` does: mesh-wide (root namespace, no selector) <
  namespace-wide (no selector) < workload (selector, not in the root namespace);
  ``UNSET`` inherits; ``portLevelMtls`` overrides per port (its ``UNSET`` inherits the
  workload's mode); nothing at all → ``PERMISSIVE``. Several candidates at one level: the
  oldest (``creationTimestamp``, then name) wins.
  https://istio.io/latest/docs/reference/config/security/peer_authentication/
* :func:`inbound_filter_chains` + :func:`listener_filters` build the inbound listener for a
  mode: STRICT = one TLS chain requiring a client certificate from the trust domain(s);
  PERMISSIVE = that TLS chain (``transport_protocol: tls``) plus a plaintext one
  (``raw_buffer``) behind a ``tls_inspector``; DISABLE = plaintext. TLS chains forward the
  caller's SPIFFE id to the app in ``x-forwarded-client-cert`` (``SANITIZE_SET``);
  plaintext chains strip any client-sent XFCC (``SANITIZE``).
* :func:`istio_mutual_transport_socket` is the client side of ``tls.mode: ISTIO_MUTUAL``:
  our certificate, the server's SPIFFE id checked, SNI ``outbound_.<port>_.<subset>_.<host>``.
  :func:`outbound_tls_mode` resolves a DestinationRule's TLS mode for a port and subset.

Certificates come from the node agent over SDS (``default``, ``ROOTCA``); the dict shapes
are those of :mod:`meshloop.identity.envoy_tls`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401 (type URL)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401 (type URL)

from meshloop.identity.envoy_tls import SDS_CLUSTER, downstream_tls, upstream_tls
from meshloop.mesh.destination_rule import ClientTLSSettings, DestinationRule, TrafficPolicy
from meshloop.mesh.security import MutualTLS, PeerAuthentication

__all__ = [
    "EffectiveMtls",
    "MtlsMode",
    "effective_mtls",
    "inbound_filter_chains",
    "istio_mutual_sni",
    "istio_mutual_transport_socket",
    "listener_filters",
    "mtls_mode",
    "outbound_tls_mode",
    "server_identities",
]

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
DEFAULT_ROOT_NAMESPACE = "istio-system"
_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    },
}
_ALPN = ["h2", "http/1.1"]


# --- PeerAuthentication resolution ---------------------------------------------------------


@dataclass(frozen=True)
class EffectiveMtls:
    """A workload's resolved mTLS: its mode and per-port overrides (target ports)."""

    mode: MtlsMode = "PERMISSIVE"
    ports: Mapping[int, MtlsMode] = field(default_factory=dict)

    def for_port(self, port: int) -> MtlsMode:
        return self.ports.get(port, self.mode)


def _age(pa: PeerAuthentication) -> tuple[bool, str, str]:
    stamp = pa.metadata.creation_timestamp
    return (stamp is None, "" if stamp is None else str(stamp), pa.name)


def _oldest(candidates: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(candidates, key=_age) if candidates else None


def _set(mode: MutualTLS | None, inherited: MtlsMode) -> MtlsMode:
    return inherited if mode is None or mode.mode == "UNSET" else mode.mode


def effective_mtls(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    peer_authentications: Iterable[PeerAuthentication],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> EffectiveMtls:
    """Resolve the PeerAuthentications for one workload (Istio's precedence, see module doc)."""
    mesh: list[PeerAuthentication] = []
    namespace: list[PeerAuthentication] = []
    workload: list[PeerAuthentication] = []
    for pa in peer_authentications:
        selector = pa.spec.selector.match_labels if pa.spec.selector is not None else {}
        if not selector:
            if pa.namespace == root_namespace:
                mesh.append(pa)
            elif pa.namespace == workload_namespace:
                namespace.append(pa)
        elif pa.namespace == workload_namespace != root_namespace and all(
            workload_labels.get(k) == v for k, v in selector.items()
        ):
            workload.append(pa)
    mode: MtlsMode = "PERMISSIVE"
    for chosen in (_oldest(mesh), _oldest(namespace)):
        if chosen is not None:
            mode = _set(chosen.spec.mtls, mode)
    ports: dict[int, MtlsMode] = {}
    chosen = _oldest(workload)
    if chosen is not None:
        mode = _set(chosen.spec.mtls, mode)
        ports = {port: _set(m, mode) for port, m in chosen.spec.port_level_mtls.items()}
    return EffectiveMtls(mode, ports)


def mtls_mode(
    workload_namespace: str,
    workload_labels: Mapping[str, str],
    port: int,
    peer_authentications: Iterable[PeerAuthentication],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> MtlsMode:
    """The mode for one inbound (target) port of a workload."""
    resolved = effective_mtls(workload_namespace, workload_labels, peer_authentications, root_namespace)
    return resolved.for_port(port)


# --- inbound listener ------------------------------------------------------------------------


def _on_sds_cluster(config: Any, cluster: str) -> Any:
    """A copy of ``config`` whose SDS sources use ``cluster`` instead of ``sds-grpc``."""
    if isinstance(config, dict):
        return {
            k: (cluster if k == "cluster_name" and v == SDS_CLUSTER else _on_sds_cluster(v, cluster))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_on_sds_cluster(v, cluster) for v in config]
    return config


def _manager_filter(manager: Mapping[str, Any], xfcc: str) -> dict[str, Any]:
    typed = copy.deepcopy(dict(manager.get("typed_config", manager)))
    typed.setdefault("@type", _HCM_TYPE)
    typed["forward_client_cert_details"] = xfcc
    if xfcc == "SANITIZE_SET":
        typed["set_current_client_cert_details"] = {"uri": True}
    else:
        typed.pop("set_current_client_cert_details", None)
    return {"name": _HCM, "typed_config": typed}


def _tls_chain(manager: Mapping[str, Any], trust_domains: Sequence[str], cluster: str) -> dict[str, Any]:
    socket = downstream_tls([f"spiffe://{td}/" for td in trust_domains])
    socket["typed_config"]["common_tls_context"]["alpn_protocols"] = list(_ALPN)
    return {
        "name": "inbound-mtls",
        "transport_socket": _on_sds_cluster(socket, cluster),
        "filters": [_manager_filter(manager, "SANITIZE_SET")],
    }


def _plain_chain(manager: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": "inbound-plaintext", "filters": [_manager_filter(manager, "SANITIZE")]}


def inbound_filter_chains(
    mode: MtlsMode,
    http_connection_manager: Mapping[str, Any],
    sds_socket_cluster: str = SDS_CLUSTER,
    *,
    trust_domains: Sequence[str] = ("cluster.local",),
) -> list[dict[str, Any]]:
    """Filter chains of the inbound listener for ``mode`` around one HCM.

    ``http_connection_manager`` is the HCM's ``typed_config`` (or a whole network filter
    entry holding it); it is copied, never modified. Peers must present a certificate from
    ``ROOTCA`` whose URI SAN is in one of ``trust_domains``; authorization by identity is
    RBAC's job (:mod:`meshloop.xds.rbac`). Use with :func:`listener_filters`.
    """
    if mode == "STRICT":
        return [_tls_chain(http_connection_manager, trust_domains, sds_socket_cluster)]
    if mode == "PERMISSIVE":
        tls = _tls_chain(http_connection_manager, trust_domains, sds_socket_cluster)
        tls["filter_chain_match"] = {"transport_protocol": "tls"}
        plain = _plain_chain(http_connection_manager)
        plain["filter_chain_match"] = {"transport_protocol": "raw_buffer"}
        return [tls, plain]
    if mode == "DISABLE":
        return [_plain_chain(http_connection_manager)]
    raise ValueError(f"unknown mTLS mode {mode!r}; expected STRICT, PERMISSIVE or DISABLE")


def listener_filters(mode: MtlsMode) -> list[dict[str, Any]]:
    """The listener filters ``mode`` needs: a TLS inspector for PERMISSIVE, none otherwise."""
    return [copy.deepcopy(_TLS_INSPECTOR)] if mode == "PERMISSIVE" else []


# --- outbound: ISTIO_MUTUAL -----------------------------------------------------------------


def server_identities(
    namespace: str, service_accounts: Iterable[str] = (), trust_domain: str = "cluster.local"
) -> list[str]:
    """SPIFFE ids a destination may present: exact per known service account, else the
    namespace prefix ``spiffe://<td>/ns/<ns>/`` (a trailing ``/`` means a prefix match)."""
    accounts = sorted(set(service_accounts))
    if not accounts:
        return [f"spiffe://{trust_domain}/ns/{namespace}/"]
    return [f"spiffe://{trust_domain}/ns/{namespace}/sa/{sa}" for sa in accounts]


def istio_mutual_sni(host: str, port: int, subset: str | None = None) -> str:
    """Istio's SNI for ISTIO_MUTUAL: ``outbound_.<port>_.<subset>_.<host>`` (empty subset allowed)."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def istio_mutual_transport_socket(
    host: str,
    port: int,
    subset: str | None,
    server_spiffe_ids: Sequence[str],
    sds_socket_cluster: str = SDS_CLUSTER,
) -> dict[str, Any]:
    """A cluster ``transport_socket`` for ``ISTIO_MUTUAL``: presents SDS ``default``, trusts
    ``ROOTCA``, requires a server URI SAN in ``server_spiffe_ids`` (exact, or prefix when an
    entry ends in ``/``; see :func:`server_identities`)."""
    if not server_spiffe_ids:
        raise ValueError(f"ISTIO_MUTUAL to {host}:{port} needs at least one server SPIFFE id")
    socket = upstream_tls(list(server_spiffe_ids))
    socket["typed_config"]["sni"] = istio_mutual_sni(host, port, subset)
    return dict(_on_sds_cluster(socket, sds_socket_cluster))


def _port_tls(policy: TrafficPolicy | None, port: int) -> ClientTLSSettings | None:
    if policy is None:
        return None
    found = policy.tls
    for setting in policy.port_level_settings:
        if setting.port is not None and setting.port.number == port and setting.tls is not None:
            found = setting.tls
    return found


def outbound_tls_mode(
    destination_rule: DestinationRule | None, port: int, subset: str | None = None
) -> str | None:
    """The DestinationRule's ``tls.mode`` for a port and subset (``None`` = not set: the
    caller decides, e.g. plaintext; auto-mTLS is not implemented). Precedence as Istio's
    ``MergeTrafficPolicy``: subset port-level > subset > rule port-level > rule."""
    if destination_rule is None:
        return None
    tls = _port_tls(destination_rule.spec.traffic_policy, port)
    chosen = destination_rule.spec.subset(subset) if subset else None
    if chosen is not None:
        tls = _port_tls(chosen.traffic_policy, port) or tls
    return tls.mode if tls is not None else None
