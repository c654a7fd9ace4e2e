"""Semantic rules for Gateway, ServiceEntry, DestinationRule and the security kinds.

https://istio.io/latest/docs/reference/config/networking/gateway/
https://istio.io/latest/docs/reference/config/networking/service-entry/
https://istio.io/latest/docs/reference/config/security/authorization-policy/
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import TypeVar

from meshloop.mesh.config import MeshConfig
from meshloop.mesh.networking import ServiceEntry
from meshloop.mesh.validation import Reporter, Rule

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


def _repeats(items: Iterable[tuple[K, W]]) -> Iterator[tuple[K, W, W]]:
    """``(key, where, first_where)`` for every key already seen earlier in ``items``."""
    first: dict[K, W] = {}
    for key, where in items:
        if key in first:
            yield key, where, first[key]
        else:
            first[key] = where


def check_gateway_servers(config: MeshConfig, report: Reporter) -> None:
    """Servers of one Gateway: one protocol per port, unique port names, no host twice on a port."""
    for gw in config.gateways:
        servers = list(enumerate(gw.spec.servers))
        protocols = {i: s.port.protocol for i, s in servers}
        for number, i, j in _repeats((s.port.number, i) for i, s in servers):
            if protocols[i] != protocols[j]:
                report(
                    gw,
                    ("spec", "servers", i, "port", "protocol"),
                    f"port {number} is already declared with protocol {protocols[j]} by spec.servers[{j}]",
                )
        for name, i, j in _repeats((s.port.name, i) for i, s in servers if s.port.name):
            report(
                gw,
                ("spec", "servers", i, "port", "name"),
                f'port name "{name}" is already used by spec.servers[{j}]',
            )
        hosts = ((((s.port.number, h), (i, k))) for i, s in servers for k, h in enumerate(s.hosts))
        for (number, host), (i, k), (j, _) in _repeats(hosts):
            if i != j:
                report(
                    gw,
                    ("spec", "servers", i, "hosts", k),
                    f'host "{host}" on port {number} is already served by spec.servers[{j}]',
                )


def check_service_entry_ports(config: MeshConfig, report: Reporter) -> None:
    """Unique port numbers and names within a ServiceEntry; one protocol per host and port across them."""
    seen: dict[tuple[str, int], tuple[str, ServiceEntry]] = {}
    for se in config.service_entries:
        ports = list(enumerate(se.spec.ports))
        for number, i, j in _repeats((p.number, i) for i, p in ports):
            report(
                se, ("spec", "ports", i, "number"), f"port {number} is already declared by spec.ports[{j}]"
            )
        for name, i, j in _repeats((p.name, i) for i, p in ports if p.name):
            report(se, ("spec", "ports", i, "name"), f'port name "{name}" is already used by spec.ports[{j}]')
        for i, port in ports:
            protocol = port.protocol or "TCP"
            for host in se.spec.hosts:
                other_protocol, other = seen.setdefault((host, port.number), (protocol, se))
                if other is not se and other_protocol != protocol:
                    report(
                        se,
                        ("spec", "ports", i, "protocol"),
                        f'host "{host}" port {port.number} is declared as {other_protocol} by ServiceEntry '
                        f"{other.namespace}/{other.name} ({report.where(other, ('spec', 'ports'))})",
                    )
        if se.spec.endpoints and se.spec.workload_selector is not None:
            report(se, ("spec", "workloadSelector"), "set either endpoints or workloadSelector, not both")


def check_subset_names(config: MeshConfig, report: Reporter) -> None:
    """Subset names are unique within a DestinationRule."""
    for dr in config.destination_rules:
        for name, i, j in _repeats((s.name, i) for i, s in enumerate(dr.spec.subsets)):
            report(
                dr, ("spec", "subsets", i, "name"), f'subset "{name}" is already defined by spec.subsets[{j}]'
            )


def check_authorization_policies(config: MeshConfig, report: Reporter) -> None:
    """DENY without rules denies nothing (Istio accepts it: warn); CUSTOM needs a provider."""
    for ap in config.authorization_policies:
        if ap.spec.action == "DENY" and not ap.spec.rules:
            report(
                ap,
                ("spec", "rules"),
                "action DENY with no rules matches no request, so it denies nothing",
                severity="warning",
                line_field=("spec", "action"),
            )
        if ap.spec.action == "CUSTOM" and not ap.spec.provider:
            report(
                ap,
                ("spec", "provider"),
                "action CUSTOM requires provider.name",
                line_field=("spec", "action"),
            )


def check_peer_authentications(config: MeshConfig, report: Reporter) -> None:
    """``portLevelMtls`` needs a workload selector (Istio rejects it otherwise)."""
    for pa in config.peer_authentications:
        if pa.spec.port_level_mtls and (pa.spec.selector is None or not pa.spec.selector.match_labels):
            report(pa, ("spec", "portLevelMtls"), "portLevelMtls requires a selector with matchLabels")


RULES: tuple[Rule, ...] = (
    check_gateway_servers,
    check_service_entry_ports,
    check_subset_names,
    check_authorization_policies,
    check_peer_authentications,
)
