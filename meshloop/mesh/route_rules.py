"""Semantic rules for ``VirtualService``: weights, destinations, subsets, gateways, shadowing.

https://istio.io/latest/docs/reference/config/networking/virtual-service/
https://istio.io/latest/docs/reference/config/analysis/ (IST0101, IST0109, IST0130)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from meshloop.mesh.config import MeshConfig
from meshloop.mesh.issues import FieldPath
from meshloop.mesh.registry import host_matches, resolve_host
from meshloop.mesh.validation import Reporter, Rule
from meshloop.mesh.virtual_service import Destination, VirtualService

MESH_GATEWAY = "mesh"


def _destinations(vs: VirtualService) -> Iterator[tuple[FieldPath, Destination]]:
    for i, http in enumerate(vs.spec.http):
        for j, route in enumerate(http.route):
            yield ("spec", "http", i, "route", j, "destination"), route.destination
        if http.mirror is not None:
            yield ("spec", "http", i, "mirror"), http.mirror
    for i, tcp in enumerate(vs.spec.tcp):
        for j, tcp_route in enumerate(tcp.route):
            yield ("spec", "tcp", i, "route", j, "destination"), tcp_route.destination


def check_weights(config: MeshConfig, report: Reporter) -> None:
    """With several destinations, their weights (unset counts as 0) must total 100."""
    for vs in config.virtual_services:
        routes: list[tuple[FieldPath, Sequence[int | None]]] = [
            (("spec", "http", i, "route"), [d.weight for d in h.route]) for i, h in enumerate(vs.spec.http)
        ]
        routes += [
            (("spec", "tcp", i, "route"), [d.weight for d in t.route]) for i, t in enumerate(vs.spec.tcp)
        ]
        for path, weights in routes:
            total = sum(w or 0 for w in weights)
            if len(weights) > 1 and total != 100:
                report(vs, path, f"destination weights sum to {total}; they must total 100")


def check_destination_hosts(config: MeshConfig, report: Reporter) -> None:
    """Every destination host (FQDN-resolved) is a Service or ServiceEntry host."""
    registry = config.registry
    for vs in config.virtual_services:
        for path, dest in _destinations(vs):
            host = resolve_host(dest.host, vs.namespace)
            if not registry.has_host(host):
                report(vs, (*path, "host"), f'unknown host "{host}": no Service or ServiceEntry defines it')


def check_subsets(config: MeshConfig, report: Reporter) -> None:
    """A destination subset is defined by a DestinationRule for the destination's host."""
    defined: dict[str, set[str]] = {}
    for dr in config.destination_rules:
        host = resolve_host(dr.spec.host, dr.namespace)
        defined.setdefault(host, set()).update(s.name for s in dr.spec.subsets)
    for vs in config.virtual_services:
        for path, dest in _destinations(vs):
            if dest.subset is None:
                continue
            host = resolve_host(dest.host, vs.namespace)
            names = set().union(*(s for h, s in defined.items() if host_matches(h, host)))
            if dest.subset not in names:
                report(
                    vs,
                    (*path, "subset"),
                    f'subset "{dest.subset}" is not defined by any DestinationRule for host "{host}"',
                )


def _gateway_key(ref: str, namespace: str) -> str:
    return ref if ref == MESH_GATEWAY or "/" in ref else f"{namespace}/{ref}"


def check_gateway_refs(config: MeshConfig, report: Reporter) -> None:
    """``spec.gateways`` and ``match.gateways`` name existing Gateways (or ``mesh``)."""
    known = {f"{g.namespace}/{g.name}" for g in config.gateways}
    for vs in config.virtual_services:
        refs: list[tuple[FieldPath, str]] = [
            (("spec", "gateways", i), g) for i, g in enumerate(vs.spec.gateways)
        ]
        for i, http in enumerate(vs.spec.http):
            for j, match in enumerate(http.match):
                refs += [
                    (("spec", "http", i, "match", j, "gateways", k), g) for k, g in enumerate(match.gateways)
                ]
        for path, ref in refs:
            key = _gateway_key(ref, vs.namespace)
            if key != MESH_GATEWAY and key not in known:
                report(vs, path, f'gateway "{key}" not found')


def check_host_conflicts(config: MeshConfig, report: Reporter) -> None:
    """Two VirtualServices for the same host on sidecars (gateway ``mesh``) conflict.

    Istio merges VirtualServices only on gateways; for sidecars it uses one and
    ignores the rest (IST0109), so meshloop reports the later one as an error.
    """
    claimed: dict[str, VirtualService] = {}
    for vs in config.virtual_services:
        gateways = [_gateway_key(g, vs.namespace) for g in vs.spec.gateways] or [MESH_GATEWAY]
        if MESH_GATEWAY not in gateways:
            continue
        for i, raw in enumerate(vs.spec.hosts):
            host = resolve_host(raw, vs.namespace)
            first = claimed.setdefault(host, vs)
            if first is not vs:
                report(
                    vs,
                    ("spec", "hosts", i),
                    f'host "{host}" is already routed for sidecars by VirtualService '
                    f"{first.namespace}/{first.name} ({report.where(first, ('spec', 'hosts'))}); "
                    "Istio merges VirtualServices only on gateways",
                )


def check_http_actions(config: MeshConfig, report: Reporter) -> None:
    """Each HTTP route forwards, redirects, responds directly or delegates (exactly one)."""
    for vs in config.virtual_services:
        for i, http in enumerate(vs.spec.http):
            actions = [
                name
                for name, present in (
                    ("route", bool(http.route)),
                    ("redirect", http.redirect is not None),
                    ("directResponse", http.direct_response is not None),
                    ("delegate", http.delegate is not None),
                )
                if present
            ]
            if not actions:
                report(
                    vs, ("spec", "http", i), "one of route, redirect, directResponse or delegate is required"
                )
            elif len(actions) > 1:
                report(vs, ("spec", "http", i), f"{' and '.join(actions)} cannot be combined")


def check_shadowed_routes(config: MeshConfig, report: Reporter) -> None:
    """A route after a catch-all (no match, or a match of only ``uri: prefix: /``) never matches."""
    for vs in config.virtual_services:
        catch_all: int | None = None
        for i, http in enumerate(vs.spec.http):
            if catch_all is not None:
                report(
                    vs,
                    ("spec", "http", i),
                    f"unreachable: spec.http[{catch_all}] before it matches every request",
                    severity="warning",
                )
            elif not http.match or any(m.is_catch_all() for m in http.match):
                catch_all = i


def check_hosts_present(config: MeshConfig, report: Reporter) -> None:
    """A VirtualService without hosts can only be a delegate of another one."""
    for vs in config.virtual_services:
        if not vs.spec.hosts:
            report(vs, ("spec", "hosts"), "no hosts: usable only as a delegate", severity="warning")


RULES: tuple[Rule, ...] = (
    check_hosts_present,
    check_weights,
    check_destination_hosts,
    check_subsets,
    check_gateway_refs,
    check_host_conflicts,
    check_http_actions,
    check_shadowed_routes,
)
