"""EDS: a ``ClusterLoadAssignment`` for every EDS cluster of a proxy, pure.

Endpoints come from the registry: the subset's labels select them, only ready ones are
sent, each keeps its weight, and they are grouped by locality (``region/zone/subzone``).
Endpoints whose address is not an IP are left out (EDS takes addresses, not names).
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/endpoint/v3/endpoint.proto
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from meshloop.mesh import Endpoint
from meshloop.xds.cds import outbound_cluster_keys
from meshloop.xds.protos import parse
from meshloop.xds.proxy import Proxy
from meshloop.xds.push import PushContext

__all__ = ["build_endpoints", "load_assignment"]


@lru_cache(maxsize=65_536)  # endpoint addresses repeat across clusters, proxies and pushes
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _locality(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    parts = text.split("/")
    return {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=False) if v}


def load_assignment(cluster: str, endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    """Ready IP endpoints grouped by locality, weights kept (proto3 JSON)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for ep in endpoints:
        if not ep.ready or not _is_ip(ep.address):
            continue
        groups.setdefault(ep.locality or "", []).append(
            {
                "endpoint": {"address": {"socket_address": {"address": ep.address, "port_value": ep.port}}},
                "health_status": "HEALTHY",
                "load_balancing_weight": max(ep.weight, 1),
            }
        )
    localities = []
    for locality in sorted(groups):
        group: dict[str, Any] = {"lb_endpoints": groups[locality]}
        if locality:
            group["locality"] = _locality(locality)
        localities.append(group)
    return {"cluster_name": cluster, "endpoints": localities}


def build_endpoints(proxy: Proxy, push: PushContext) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One assignment per outbound EDS cluster (named like the cluster)."""
    out = []
    for key in outbound_cluster_keys(proxy, push):
        if key.discovery != "EDS":
            continue
        endpoints = push.registry.endpoints_for(key.service.host, key.port.number, key.labels)
        out.append(parse(load_assignment(key.name, endpoints), endpoint_pb2.ClusterLoadAssignment))
    return out
