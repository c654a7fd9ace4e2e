"""LDS: listeners for a proxy (Istio ``BuildListeners``), pure.

Sidecars (no iptables here, so listeners bind real ports; see :mod:`meshloop.xds.proxy`
for the address/offset metadata):

* outbound ``<address>_<port>`` per HTTP service port on ``<outbound address>:<port + offset>``:
  HCM with RDS ``"<port>"``, HTTP filters fault + router; TCP-only ports get a ``tcp_proxy``
  to the first service on the port;
* inbound ``inbound_<address>_<port>`` per own endpoint port on
  ``<inbound address>:<port + inbound offset>``: HCM with a route to ``inbound|<port>||`` (inline,
  or over RDS ``inbound|<port>||`` when the ``inbound_route_filter_config`` hook answers),
  HTTP filters from the ``inbound_http_filters`` hook (RBAC) + router, downstream TLS from the
  ``inbound_tls`` hook (mTLS; PERMISSIVE = TLS and plaintext chains split by the TLS inspector).

Gateways: ``<address>_<port>`` per Gateway server port (+ offset): HTTP servers share one chain
(RDS ``http.<port>``); HTTPS servers (SIMPLE/MUTUAL, files or SDS ``credentialName``) get a
chain each, selected by SNI. Every HCM and ``tcp_proxy`` sends access logs to ``meshloop_collector``.
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/listener/v3/listener.proto
"""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2

from meshloop.mesh.networking import ServerTLSSettings
from meshloop.xds.cds import HTTP_PROTOCOLS
from meshloop.xds.protos import (
    ADS_SOURCE,
    DOWNSTREAM_TLS,
    FAULT,
    FAULT_FILTER,
    HCM,
    HCM_FILTER,
    ROUTER,
    ROUTER_FILTER,
    TCP_PROXY,
    TCP_PROXY_FILTER,
    TLS_INSPECTOR,
    parse,
)
from meshloop.xds.proxy import Proxy, ServiceInstance, service_instances
from meshloop.xds.push import PushContext, as_dict, cluster_name, inbound_route_filter_config
from meshloop.xds.rds import GatewayServer, gateway_servers, inbound_route_config, sidecar_http_ports
from meshloop.xds.telemetry import access_log_entry, http_grpc_access_log, tcp_grpc_access_log

__all__ = ["build_listeners"]

_TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}}
_FAULT = {"name": FAULT_FILTER, "typed_config": {"@type": FAULT}}
_ROUTER = {"name": ROUTER_FILTER, "typed_config": {"@type": ROUTER}}


def build_listeners(proxy: Proxy, push: PushContext) -> list[listener_pb2.Listener]:
    """Outbound + inbound listeners (sidecars) or Gateway server listeners (gateways)."""
    if proxy.role == "gateway":
        listeners = _gateway_listeners(proxy, push)
    else:
        listeners = _outbound_listeners(proxy, push)
        listeners += [_inbound_listener(proxy, push, i) for i in service_instances(proxy, push.registry)]
    return [parse(item, listener_pb2.Listener) for item in listeners]


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(stat_prefix: str, filters: list[dict[str, Any]], **routing: Any) -> dict[str, Any]:
    return {
        "name": HCM_FILTER,
        "typed_config": {
            "@type": HCM,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "http_filters": [*filters, _ROUTER],
            "access_log": [access_log_entry(http_grpc_access_log())],
            **routing,
        },
    }


def _rds(name: str) -> dict[str, Any]:
    return {"rds": {"config_source": ADS_SOURCE, "route_config_name": name}}


def _tcp_proxy(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": TCP_PROXY_FILTER,
        "typed_config": {
            "@type": TCP_PROXY,
            "stat_prefix": stat_prefix,
            "cluster": cluster,
            "access_log": [access_log_entry(tcp_grpc_access_log())],
        },
    }


def _outbound_listeners(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    out = []
    http_ports = sidecar_http_ports(push)
    for port in http_ports:
        name = f"{proxy.outbound_bind}_{port}"
        hcm = _hcm(f"outbound_{name}", [_FAULT], **_rds(str(port)))
        out.append(
            _listener(
                name,
                proxy.outbound_bind,
                port + proxy.outbound_port_offset,
                "OUTBOUND",
                [{"filters": [hcm]}],
            )
        )
    tcp: dict[int, str] = {}
    for host, service in push.registry.services.items():
        for sp in service.ports:
            if sp.protocol not in HTTP_PROTOCOLS and sp.number not in http_ports:
                tcp.setdefault(sp.number, cluster_name("outbound", sp.number, None, host))
    for port, cluster in sorted(tcp.items()):
        name = f"{proxy.outbound_bind}_{port}"
        chain = {"filters": [_tcp_proxy(cluster, cluster)]}
        out.append(
            _listener(name, proxy.outbound_bind, port + proxy.outbound_port_offset, "OUTBOUND", [chain])
        )
    return out


def _listener(
    name: str, address: str, port: int, direction: str, chains: list[dict[str, Any]], inspector: bool = False
) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "name": name,
        "address": _address(address, port),
        "traffic_direction": direction,
        "filter_chains": chains,
    }
    if inspector:
        listener["listener_filters"] = [_TLS_INSPECTOR]
    return listener


def _inbound_listener(proxy: Proxy, push: PushContext, instance: ServiceInstance) -> dict[str, Any]:
    port = instance.endpoint.port
    cluster = cluster_name("inbound", port, None, "")
    if instance.port.protocol in HTTP_PROTOCOLS:
        filters = [
            as_dict(f)
            for f in (
                push.hooks.inbound_http_filters(proxy, push, port) if push.hooks.inbound_http_filters else ()
            )
        ]
        filter_config = inbound_route_filter_config(proxy, push, port)
        routing: dict[str, Any] = (
            {"route_config": inbound_route_config(port)} if filter_config is None else _rds(cluster)
        )

        def network_filter(tls: bool) -> dict[str, Any]:
            extra: dict[str, Any] = dict(routing)
            if tls:
                extra["forward_client_cert_details"] = "SANITIZE_SET"
                extra["set_current_client_cert_details"] = {"uri": True}
            return _hcm(f"inbound_{port}", filters, **extra)
    else:

        def network_filter(tls: bool) -> dict[str, Any]:
            return _tcp_proxy(cluster, cluster)

    tls = push.hooks.inbound_tls(proxy, push, port) if push.hooks.inbound_tls else None
    if tls is None:
        chains: list[dict[str, Any]] = [{"filters": [network_filter(False)]}]
    else:
        socket = as_dict(tls.transport_socket)
        chains = [
            {
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": [network_filter(True)],
                "transport_socket": socket,
            }
        ]
        if tls.permissive:
            chains.append(
                {
                    "filter_chain_match": {"transport_protocol": "raw_buffer"},
                    "filters": [network_filter(False)],
                }
            )
    name = f"inbound_{proxy.inbound_bind}_{port}"
    return _listener(
        name,
        proxy.inbound_bind,
        port + proxy.inbound_port_offset,
        "INBOUND",
        chains,
        inspector=tls is not None,
    )


def _server_tls(tls: ServerTLSSettings) -> dict[str, Any]:
    """``DownstreamTlsContext`` for a Gateway server (files, or SDS over ADS by ``credentialName``)."""
    common: dict[str, Any] = {"alpn_protocols": ["h2", "http/1.1"]}
    context: dict[str, Any] = {"@type": DOWNSTREAM_TLS, "common_tls_context": common}
    if tls.credential_name:
        common["tls_certificate_sds_secret_configs"] = [
            {"name": tls.credential_name, "sds_config": ADS_SOURCE}
        ]
        if tls.mode == "MUTUAL":
            common["validation_context_sds_secret_config"] = {
                "name": f"{tls.credential_name}-cacert",
                "sds_config": ADS_SOURCE,
            }
    elif tls.server_certificate and tls.private_key:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.server_certificate},
                "private_key": {"filename": tls.private_key},
            }
        ]
        if tls.mode == "MUTUAL" and tls.ca_certificates:
            common["validation_context"] = {"trusted_ca": {"filename": tls.ca_certificates}}
    if tls.mode == "MUTUAL":
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _gateway_listeners(proxy: Proxy, push: PushContext) -> list[dict[str, Any]]:
    by_port: dict[int, list[GatewayServer]] = {}
    for gs in gateway_servers(proxy, push):
        if gs.is_http:
            by_port.setdefault(gs.server.port.number, []).append(gs)
    out = []
    for port, servers in sorted(by_port.items()):
        name = f"{proxy.outbound_bind}_{port}"
        chains: list[dict[str, Any]] = []
        seen: set[str] = set()
        for gs in servers:
            if gs.route_name in seen:
                continue
            seen.add(gs.route_name)
            hcm = _hcm(f"{name}_{gs.route_name}", [_FAULT], use_remote_address=True, **_rds(gs.route_name))
            chain: dict[str, Any] = {"filters": [hcm]}
            if gs.tls_terminated and gs.server.tls is not None:
                names = [h for h in gs.hosts() if h != "*"]
                if names:
                    chain["filter_chain_match"] = {"server_names": names}
                chain["transport_socket"] = _server_tls(gs.server.tls)
            chains.append(chain)
        inspector = any("transport_socket" in c for c in chains)
        out.append(
            _listener(
                name, proxy.outbound_bind, port + proxy.outbound_port_offset, "OUTBOUND", chains, inspector
            )
        )
    return out
