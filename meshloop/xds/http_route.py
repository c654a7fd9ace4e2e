"""One VirtualService ``HTTPRoute`` -> Envoy routes (Istio ``translateRoute``), pure.

Each applicable ``match`` block becomes one Envoy route with the same action, in order.
Matches: uri exact/prefix/regex (``ignoreUriCase``), headers (``prefix: ""`` = present,
``withoutHeaders`` = inverted), method/authority/scheme as ``:method``/``:authority``/``:scheme``
headers, query parameters; ``port``, ``sourceLabels``, ``sourceNamespace`` and ``gateways``
are decided here, per proxy. Actions: weighted clusters, redirect, direct response; plus
timeout (unset = none, as Istio), retries (unset = Istio's default policy), fault
(per-route ``envoy.filters.http.fault``), mirrors, rewrites, header operations, and a hash
policy when the destination's DestinationRule uses consistent hashing.
https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshloop.mesh import resolve_host
from meshloop.mesh.base import StringMatch
from meshloop.mesh.virtual_service import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRoute,
    Percentage,
    VirtualService,
)
from meshloop.xds.protos import FAULT, FAULT_FILTER, PREVIOUS_HOSTS, duration
from meshloop.xds.proxy import Proxy
from meshloop.xds.push import MESH_GATEWAY, PushContext, cluster_name, gateway_ref
from meshloop.xds.traffic_policy import effective_policy, hash_policies

__all__ = ["RouteScope", "default_route", "translate_http_route"]

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


@dataclass(frozen=True)
class RouteScope:
    """Where routes are being built: for which proxy, listener port and gateway (``ns/name``;
    ``None`` on sidecars)."""

    proxy: Proxy
    push: PushContext
    port: int
    gateway: str | None = None


def percent(p: Percentage | None, legacy: int | None = None) -> dict[str, Any]:
    """Istio percentage -> ``FractionalPercent`` (per million); unset = 100%."""
    if p is not None:
        return {"numerator": round(p.value * 10_000), "denominator": "MILLION"}
    return {"numerator": 100 if legacy is None else legacy, "denominator": "HUNDRED"}


def _string_match(sm: StringMatch) -> dict[str, Any]:
    if sm.exact is not None:
        return {"exact": sm.exact}
    if sm.prefix is not None:
        return {"prefix": sm.prefix}
    return {"safe_regex": {"regex": sm.regex}}


def _header(name: str, sm: StringMatch, invert: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if sm.prefix == "":  # Istio: an empty prefix means "the header is present"
        out["present_match"] = True
    else:
        out["string_match"] = _string_match(sm)
    if invert:
        out["invert_match"] = True
    return out


def route_match(m: HTTPMatchRequest | None) -> dict[str, Any]:
    """An Istio match block as an Envoy ``RouteMatch``."""
    out: dict[str, Any] = {"prefix": "/"}
    if m is None:
        return out
    if m.uri is not None:
        uri = m.uri
        if uri.exact is not None:
            out = {"path": uri.exact}
        elif uri.prefix is not None:
            out = {"prefix": uri.prefix}
        else:
            out = {"safe_regex": {"regex": uri.regex}}
        if m.ignore_uri_case:
            out["case_sensitive"] = False
    headers = [_header(k, v) for k, v in sorted(m.headers.items())]
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None:
            headers.append(_header(pseudo, sm))
    headers += [_header(k, v, invert=True) for k, v in sorted(m.without_headers.items())]
    if headers:
        out["headers"] = headers
    params = []
    for name, sm in sorted(m.query_params.items()):
        if sm.exact == "":
            params.append({"name": name, "present_match": True})
        else:
            params.append({"name": name, "string_match": _string_match(sm)})
    if params:
        out["query_parameters"] = params
    return out


def applies(m: HTTPMatchRequest, vs: VirtualService, scope: RouteScope) -> bool:
    """Whether a match block can match on this proxy and port at all."""
    if m.port is not None and m.port != scope.port:
        return False
    if any(scope.proxy.labels.get(k) != v for k, v in m.source_labels.items()):
        return False
    if m.source_namespace is not None and m.source_namespace != scope.proxy.namespace:
        return False
    if m.gateways:
        refs = {gateway_ref(g, vs.namespace) for g in m.gateways}
        return (scope.gateway in refs) if scope.gateway else MESH_GATEWAY in refs
    return True


def destination_port(dest: Destination, namespace: str, scope: RouteScope) -> int:
    """The destination's port, else the service's only port, else the listener's port."""
    if dest.port is not None:
        return dest.port.number
    service = scope.push.registry.service(resolve_host(dest.host, namespace))
    if service is not None and len(service.ports) == 1:
        return service.ports[0].number
    return scope.port


def destination_cluster(dest: Destination, namespace: str, scope: RouteScope) -> str:
    host = resolve_host(dest.host, namespace)
    return cluster_name("outbound", destination_port(dest, namespace, scope), dest.subset, host)


def header_values(ops: HeaderOperations | None) -> tuple[list[dict[str, Any]], list[str]]:
    """(``*_headers_to_add``, ``*_headers_to_remove``) for Istio header operations."""
    if ops is None:
        return [], []
    add = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in ops.set.items()
    ]
    add += [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in ops.add.items()
    ]
    return add, list(ops.remove)


def apply_headers(target: dict[str, Any], headers: Headers | None) -> None:
    if headers is None:
        return
    for side, ops in (("request", headers.request), ("response", headers.response)):
        add, remove = header_values(ops)
        if add:
            target[f"{side}_headers_to_add"] = add
        if remove:
            target[f"{side}_headers_to_remove"] = remove


def retry_policy(retries: HTTPRetry | None) -> dict[str, Any] | None:
    """Istio's retry translation; ``None`` retries -> Istio's default policy (2 attempts)."""
    if retries is not None and retries.attempts == 0:
        return None
    attempts = 2 if retries is None else retries.attempts
    conditions, codes = [], [503] if retries is None or not retries.retry_on else []
    for part in (retries.retry_on if retries and retries.retry_on else DEFAULT_RETRY_ON).split(","):
        part = part.strip()
        if part.isdigit():
            codes.append(int(part))
        elif part:
            conditions.append(part)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions),
        "num_retries": attempts,
        "retry_host_predicate": [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}
        ],
        "host_selection_retry_max_attempts": "5",
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if retries is not None and retries.per_try_timeout is not None:
        policy["per_try_timeout"] = duration(retries.per_try_timeout.nanos)
    return policy


def fault_config(fault: HTTPFaultInjection) -> dict[str, Any]:
    """Per-route ``HTTPFault``: delay and/or abort with their percentages."""
    out: dict[str, Any] = {"@type": FAULT}
    if fault.delay is not None:
        d = fault.delay
        out["delay"] = {
            "fixed_delay": duration(d.fixed_delay.nanos),
            "percentage": percent(d.percentage, d.percent),
        }
    if fault.abort is not None:
        a = fault.abort
        abort: dict[str, Any] = {"percentage": percent(a.percentage)}
        if a.grpc_status is not None:
            abort["grpc_status"] = (
                _GRPC_CODES.get(a.grpc_status.upper(), 2)
                if not a.grpc_status.isdigit()
                else int(a.grpc_status)
            )
        else:
            abort["http_status"] = a.http_status or 503
        out["abort"] = abort
    return out


def redirect_action(r: HTTPRedirect) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.uri:
        out["path_redirect"] = r.uri
    if r.authority:
        out["host_redirect"] = r.authority
    if r.port:
        out["port_redirect"] = r.port
    if r.scheme:
        out["scheme_redirect"] = r.scheme
    out["response_code"] = _REDIRECT_CODES.get(r.redirect_code or 301, "MOVED_PERMANENTLY")
    return out


def _mirrors(http: HTTPRoute, vs: VirtualService, scope: RouteScope) -> list[dict[str, Any]]:
    out = []
    if http.mirror is not None:
        fraction = percent(http.mirror_percentage, http.mirror_percent)
        out.append(
            {
                "cluster": destination_cluster(http.mirror, vs.namespace, scope),
                "runtime_fraction": {"default_value": fraction},
            }
        )
    for item in http.mirrors or ():
        dest = Destination.model_validate(item["destination"])
        pct = Percentage.model_validate(item["percentage"]) if item.get("percentage") else None
        out.append(
            {
                "cluster": destination_cluster(dest, vs.namespace, scope),
                "runtime_fraction": {"default_value": percent(pct)},
            }
        )
    return out


def _hash_policy(http: HTTPRoute, vs: VirtualService, scope: RouteScope) -> list[dict[str, Any]]:
    found = []
    for rd in http.route:
        host = resolve_host(rd.destination.host, vs.namespace)
        dr = scope.push.destination_rule(host, scope.proxy.namespace)
        port = destination_port(rd.destination, vs.namespace, scope)
        found.append(hash_policies(effective_policy(dr, rd.destination.subset, port).load_balancer))
    return found[0] if found and all(f == found[0] for f in found) else []


def route_action(http: HTTPRoute, vs: VirtualService, scope: RouteScope) -> dict[str, Any]:
    """``RouteAction``: clusters, timeout, retries, mirrors, rewrites, hash policy."""
    action: dict[str, Any] = {}
    if len(http.route) == 1:
        action["cluster"] = destination_cluster(http.route[0].destination, vs.namespace, scope)
    else:
        clusters = []
        for rd in http.route:
            entry: dict[str, Any] = {
                "name": destination_cluster(rd.destination, vs.namespace, scope),
                "weight": rd.weight or 0,
            }
            apply_headers(entry, rd.headers)
            clusters.append(entry)
        action["weighted_clusters"] = {"clusters": clusters}
    action["timeout"] = duration(http.timeout.nanos) if http.timeout is not None else "0s"
    retry = retry_policy(http.retries)
    if retry is not None:
        action["retry_policy"] = retry
    mirrors = _mirrors(http, vs, scope)
    if mirrors:
        action["request_mirror_policies"] = mirrors
    if http.rewrite is not None:
        if http.rewrite.uri is not None:
            action["prefix_rewrite"] = http.rewrite.uri
        if http.rewrite.authority:
            action["host_rewrite_literal"] = http.rewrite.authority
        rx = http.rewrite.uri_regex_rewrite
        if rx:
            action["regex_rewrite"] = {
                "pattern": {"regex": rx["match"]},
                "substitution": rx.get("rewrite", ""),
            }
    hashing = _hash_policy(http, vs, scope)
    if hashing:
        action["hash_policy"] = hashing
    return action


def translate_http_route(vs: VirtualService, http: HTTPRoute, scope: RouteScope) -> list[dict[str, Any]]:
    """Envoy routes (proto3 JSON) for one HTTP route; ``[]`` when none of its matches apply here."""
    matches = [m for m in http.match if applies(m, vs, scope)] if http.match else [None]
    if not matches:
        return []
    base: dict[str, Any] = {"name": vs.name}
    if http.redirect is not None:
        base["redirect"] = redirect_action(http.redirect)
    elif http.direct_response is not None:
        body = (http.direct_response.get("body") or {}).get("string")
        base["direct_response"] = {"status": http.direct_response.get("status", 200)}
        if body is not None:
            base["direct_response"]["body"] = {"inline_string": body}
    elif http.route:
        base["route"] = route_action(http, vs, scope)
    else:
        return []  # delegate: not translated
    if len(http.route) == 1:
        apply_headers(base, http.route[0].headers)
    apply_headers(base, http.headers)
    if http.fault is not None:
        base["typed_per_filter_config"] = {FAULT_FILTER: fault_config(http.fault)}
    return [{**base, "match": route_match(m)} for m in matches]


def default_route(cluster: str) -> dict[str, Any]:
    """Istio's route for a service without a VirtualService: everything, no timeout, default retries."""
    action: dict[str, Any] = {"cluster": cluster, "timeout": "0s", "retry_policy": retry_policy(None)}
    return {"name": "default", "match": {"prefix": "/"}, "route": action}
