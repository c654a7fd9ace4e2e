"""DestinationRule traffic policies: Istio's merge order and their Envoy cluster fields.

Merge (Istio ``MergeTrafficPolicy``): the top-level policy, then its ``portLevelSettings``
for the port, then the subset's policy, then the subset's port-level settings; each of
``loadBalancer``, ``connectionPool``, ``outlierDetection``, ``tls`` is replaced whole by
the more specific level that sets it.
https://istio.io/latest/docs/reference/config/networking/destination-rule/#TrafficPolicy
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from meshloop.mesh.destination_rule import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    DestinationRule,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    TrafficPolicy,
)
from meshloop.xds.overrides import CircuitBreaker, OutlierOverride
from meshloop.xds.protos import duration

__all__ = ["Policy", "circuit_breakers", "effective_policy", "hash_policies", "lb_fields", "outlier_fields"]

#: Istio's default thresholds (unlimited) where a DestinationRule sets none; Envoy's own
#: defaults (1024) would otherwise apply silently.
UNLIMITED = 4294967295
_LB = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
}


@dataclass(frozen=True)
class Policy:
    """The four effective settings for one (host, subset, port)."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


def _merge(base: Policy, level: TrafficPolicy | PortTrafficPolicy | None) -> Policy:
    if level is None:
        return base
    return replace(
        base,
        **{
            k: getattr(level, k)
            for k in ("load_balancer", "connection_pool", "outlier_detection", "tls")
            if getattr(level, k) is not None
        },
    )


def _port_level(policy: TrafficPolicy | None, port: int) -> PortTrafficPolicy | None:
    if policy is None:
        return None
    return next((p for p in policy.port_level_settings if p.port and p.port.number == port), None)


def effective_policy(dr: DestinationRule | None, subset: str | None, port: int) -> Policy:
    """The merged policy for ``subset`` (``None``: the host) on service port ``port``."""
    if dr is None:
        return Policy()
    top = dr.spec.traffic_policy
    policy = _merge(_merge(Policy(), top), _port_level(top, port))
    found = dr.spec.subset(subset) if subset else None
    if found is not None and found.traffic_policy is not None:
        policy = _merge(_merge(policy, found.traffic_policy), _port_level(found.traffic_policy, port))
    return policy


def lb_fields(lb: LoadBalancerSettings | None) -> dict[str, Any]:
    """``lb_policy`` (+ ring hash / maglev config) for a cluster."""
    if lb is None:
        return {}
    if lb.consistent_hash is not None:
        ch = lb.consistent_hash
        if ch.maglev is not None:
            return {"lb_policy": "MAGLEV"}
        fields: dict[str, Any] = {"lb_policy": "RING_HASH"}
        size = ch.minimum_ring_size or (ch.ring_hash or {}).get("minimumRingSize")
        if size:
            fields["ring_hash_lb_config"] = {"minimum_ring_size": str(size)}
        return fields
    return {"lb_policy": _LB[lb.simple]} if lb.simple in _LB else {}


def hash_policies(lb: LoadBalancerSettings | None) -> list[dict[str, Any]]:
    """A route's ``hash_policy`` for a consistent-hash destination (Istio ``consistentHashToHashPolicy``)."""
    ch: ConsistentHashLB | None = lb.consistent_hash if lb else None
    if ch is None:
        return []
    if ch.http_header_name:
        return [{"header": {"header_name": ch.http_header_name}}]
    if ch.http_cookie is not None:
        cookie: dict[str, Any] = {"name": ch.http_cookie.name}
        if ch.http_cookie.path:
            cookie["path"] = ch.http_cookie.path
        if ch.http_cookie.ttl is not None:
            cookie["ttl"] = duration(ch.http_cookie.ttl.nanos)
        return [{"cookie": cookie}]
    if ch.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    if ch.http_query_parameter_name:
        return [{"query_parameter": {"name": ch.http_query_parameter_name}}]
    return []


def circuit_breakers(pool: ConnectionPoolSettings | None, override: CircuitBreaker | None) -> dict[str, Any]:
    """``circuit_breakers.thresholds[0]``: Istio's mapping, unset = unlimited, override wins."""
    tcp = pool.tcp if pool else None
    http = pool.http if pool else None
    values = {
        "max_connections": tcp.max_connections if tcp else None,
        "max_pending_requests": http.http1_max_pending_requests if http else None,
        "max_requests": http.http2_max_requests if http else None,
        "max_retries": http.max_retries if http else None,
    }
    if override is not None:
        values.update(override.thresholds())
    return {"thresholds": [{k: UNLIMITED if v is None else v for k, v in values.items()}]}


def outlier_fields(
    outlier: OutlierDetection | None, override: OutlierOverride | None
) -> dict[str, Any] | None:
    """``outlier_detection`` (Istio ``applyOutlierDetection``); ``None`` when neither is set.
    Success-rate ejection stays off, as in Istio."""
    if outlier is None and override is None:
        return None
    out: dict[str, Any] = {"enforcing_success_rate": 0}
    o = outlier or OutlierDetection()
    five = o.consecutive_5xx_errors if o.consecutive_5xx_errors is not None else o.consecutive_errors
    gateway = o.consecutive_gateway_errors
    interval = o.interval.nanos if o.interval else None
    base = o.base_ejection_time.nanos if o.base_ejection_time else None
    max_pct = o.max_ejection_percent
    if override is not None:
        five = override.consecutive_5xx or five
        gateway = override.consecutive_gateway_errors or gateway
        interval = int(override.interval_s * 1e9) if override.interval_s else interval
        base = int(override.base_ejection_time_s * 1e9) if override.base_ejection_time_s else base
        max_pct = override.max_ejection_percent if override.max_ejection_percent is not None else max_pct
    if five is not None:
        out["consecutive_5xx"] = five
        out["enforcing_consecutive_5xx"] = 100 if five > 0 else 0
    elif gateway is not None:
        out["enforcing_consecutive_5xx"] = 0
    if gateway is not None:
        out["consecutive_gateway_failure"] = gateway
        out["enforcing_consecutive_gateway_failure"] = 100 if gateway > 0 else 0
    if o.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        if o.consecutive_local_origin_failures is not None:
            out["consecutive_local_origin_failure"] = o.consecutive_local_origin_failures
            out["enforcing_consecutive_local_origin_failure"] = 100
    if interval is not None:
        out["interval"] = duration(interval)
    if base is not None:
        out["base_ejection_time"] = duration(base)
    if max_pct is not None:
        out["max_ejection_percent"] = max_pct
    return out
