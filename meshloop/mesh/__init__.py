"""The mesh config model (Istio resource shapes), its loader, validation and service registry.

Public API::

    load(paths) -> (MeshConfig, issues)               # schema-level issues
    validate(config) -> list[ValidationIssue]          # semantic rules
    load_and_validate(paths) -> (MeshConfig | None, issues)
    MeshConfig.registry.endpoints_for(host, port, subset_labels)
    watch(paths, on_change), MeshState.apply(config, issues)
"""

from meshloop.mesh.config import DocumentSource, MeshConfig
from meshloop.mesh.duration import Duration
from meshloop.mesh.issues import ValidationIssue
from meshloop.mesh.loader import PathNotFound, load
from meshloop.mesh.registry import Endpoint, RegisteredService, ServiceRegistry, resolve_host
from meshloop.mesh.validate_cli import add_validate_command
from meshloop.mesh.validation import load_and_validate, validate

__all__ = [
    "DocumentSource",
    "Duration",
    "Endpoint",
    "MeshConfig",
    "PathNotFound",
    "RegisteredService",
    "ServiceRegistry",
    "ValidationIssue",
    "add_validate_command",
    "load",
    "load_and_validate",
    "resolve_host",
    "validate",
]
