"""Prometheus metrics of the mesh config: every applied and rejected change is counted."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONFIG_APPLIED = Counter(
    "meshloop_mesh_config_applied_total",
    "Mesh config changes accepted (validated without errors) and made current.",
)
CONFIG_REJECTED = Counter(
    "meshloop_mesh_config_rejected_total",
    "Mesh config changes refused because validation found errors; the last good config stays current.",
)
CONFIG_RESOURCES = Gauge(
    "meshloop_mesh_config_resources",
    "Resources in the current (last good) mesh config, by kind.",
    ["kind"],
)
