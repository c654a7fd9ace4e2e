"""``meshloop config dump``: the resources a proxy would receive, as JSON.

Like ``istioctl proxy-config all -o json`` but computed offline from the mesh files:
``{"node": ..., "overrides": ..., "versions": {type: version}, "resources": {"clusters": [...],
"endpoints": [...], "listeners": [...], "routes": [...]}}``, each resource in proto3 JSON
with Envoy's field names (``json_format.MessageToDict``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshloop.errors import MeshloopError
from meshloop.mesh import MeshConfig, load_and_validate
from meshloop.xds.cache import NodeInfo
from meshloop.xds.generate import build_snapshot
from meshloop.xds.overrides import Overrides
from meshloop.xds.protos import dump
from meshloop.xds.proxy import Role, proxy_from_node
from meshloop.xds.push import Hooks
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_name

__all__ = ["add_config_command", "config_dump"]

_KEYS = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}


def config_dump(
    proxy_node_id: str,
    config: MeshConfig,
    *,
    role: Role | None = None,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    overrides: Overrides | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """What ``proxy_node_id`` would be sent for ``config`` (raises ``TranslationError``)."""
    meta = dict(metadata or {})
    if labels is not None:
        meta["LABELS"] = dict(labels)
    proxy = proxy_from_node(NodeInfo(proxy_node_id, metadata=meta), role=role)
    snapshot = build_snapshot(proxy, config, overrides, hooks)
    return {
        "node": {
            "id": proxy.id,
            "role": proxy.role,
            "namespace": proxy.namespace,
            "labels": dict(proxy.labels),
        },
        "config_version": config.version,
        "overrides": (overrides or Overrides()).describe(),
        "versions": {short_name(url): snapshot.version(url) for url in _KEYS},
        "resources": {
            key: [dump(item.message) for item in snapshot.get(url).select(None)] for url, key in _KEYS.items()
        },
    }


def _labels(text: str) -> dict[str, str]:
    pairs = [p for p in text.split(",") if p]
    if any("=" not in p for p in pairs):
        raise argparse.ArgumentTypeError(f"labels must be key=value[,key=value], got {text!r}")
    return dict(p.split("=", 1) for p in pairs)


def _handle(args: argparse.Namespace) -> int:
    config, issues = load_and_validate([args.mesh_dir])
    for issue in issues:
        print(issue, file=sys.stderr)
    if config is None:
        print(f"config dump: {args.mesh_dir} has errors; fix them first", file=sys.stderr)
        return 1
    try:
        from meshloop.xds.security_hooks import security_hooks

        metadata = {"MESHLOOP_SDS": "true"} if args.sds else None
        hooks = security_hooks(args.trust_domain)
        result = config_dump(
            args.node, config, role=args.role, labels=args.labels, metadata=metadata, hooks=hooks
        )
    except (MeshloopError, ValueError) as exc:
        print(f"config dump: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=False))
    return 0


def add_config_command(subparsers: Any) -> None:
    """Register ``config dump --node ID [--mesh-dir DIR] [--role sidecar|gateway] [--labels k=v,...]``.

    Sets ``handler`` (args -> exit code) on the ``dump`` parser.
    """
    config = subparsers.add_parser("config", help="inspect the Envoy config meshloop generates")
    sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    parser = sub.add_parser("dump", help="print the xDS resources a proxy would receive, as JSON")
    parser.add_argument(
        "--node",
        required=True,
        help="Istio node id, e.g. sidecar~10.0.0.1~reviews-v1-x.ns~ns.svc.cluster.local",
    )
    parser.add_argument(
        "--mesh-dir", dest="mesh_dir", type=Path, default=Path("mesh"), help="mesh YAML directory"
    )
    parser.add_argument(
        "--role", choices=("sidecar", "gateway"), default=None, help="override the role in the node id"
    )
    parser.add_argument(
        "--labels", type=_labels, default=None, help="workload labels (default: guessed from the pod name)"
    )
    parser.add_argument(
        "--sds", action="store_true", help="the proxy has a node agent (SDS): show its mTLS config too"
    )
    parser.add_argument(
        "--trust-domain", dest="trust_domain", default="cluster.local", help="SPIFFE trust domain"
    )
    parser.set_defaults(handler=_handle)
