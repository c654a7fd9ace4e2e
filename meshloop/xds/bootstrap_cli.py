"""``meshloop bootstrap``: command-line flags for :func:`meshloop.xds.bootstrap.build_bootstrap`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap, render

_EPILOG = """\
examples:
  meshloop bootstrap --admin-port 9901 --workload reviews --version v2 > reviews.json
  meshloop bootstrap --role gateway --workload ingress --admin-port 9902 --ads-api DELTA_GRPC
  meshloop bootstrap --admin-port 9903 --no-ads --listen-port 10000 --upstream-port 8000
  meshloop bootstrap --admin-port 9904 --workload reviews --sds-socket /run/meshloop/reviews.sock
  envoy --mode validate -c reviews.json      # check offline
"""


def register(subparsers: Any) -> None:
    """Add the ``bootstrap`` subcommand and its flags; ``handler`` is :func:`cmd_bootstrap`."""
    p = subparsers.add_parser(
        "bootstrap",
        help="print an Envoy bootstrap pointing an Envoy at meshloop",
        description="Print an Envoy bootstrap (JSON or YAML): node identity in Istio's convention,\n"
        "static clusters to meshloop's collector and xDS server, ADS for listeners and clusters\n"
        "(or, with --no-ads, a static example listener with a gRPC access logger), and a stat sink.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ident = p.add_argument_group("node identity")
    ident.add_argument(
        "--role",
        choices=["sidecar", "gateway"],
        default="sidecar",
        help="sidecar (node id 'sidecar~...') or gateway ('router~...'); default: sidecar",
    )
    ident.add_argument(
        "--node-id",
        default=None,
        help="explicit node id (default: <sidecar|router>~IP~POD.NS~NS.svc.cluster.local)",
    )
    ident.add_argument("--node-cluster", default=None, help="node cluster (default: WORKLOAD.NAMESPACE)")
    ident.add_argument("--workload", default="app", help="workload name; also the app label (default: app)")
    ident.add_argument("--namespace", default="default", help="namespace (default: default)")
    ident.add_argument("--version", default="v1", help="version label (default: v1)")
    ident.add_argument("--pod", default=None, help="pod name in the node id (default: the workload name)")
    ident.add_argument("--ip", default="127.0.0.1", help="instance IP in the node id (default: 127.0.0.1)")
    ident.add_argument("--mesh-id", default="meshloop", help="MESH_ID metadata (default: meshloop)")
    ident.add_argument("--cluster-id", default="Kubernetes", help="CLUSTER_ID metadata (default: Kubernetes)")
    conn = p.add_argument_group("where things are")
    conn.add_argument("--admin-address", default="127.0.0.1", help="admin bind address (default: 127.0.0.1)")
    conn.add_argument(
        "--admin-port",
        type=int,
        required=True,
        help="admin port (required: every Envoy on a host needs its own)",
    )
    conn.add_argument(
        "--meshloop-host",
        default="127.0.0.1",
        help="meshloop's host: an IP (STATIC cluster) or a DNS name (STRICT_DNS); default: 127.0.0.1",
    )
    conn.add_argument("--collector-port", type=int, default=4317, help="collector gRPC port (default: 4317)")
    conn.add_argument("--xds-port", type=int, default=15010, help="xDS (ADS) port (default: 15010)")
    conn.add_argument(
        "--connect-timeout", type=float, default=1.0, help="connect timeout to meshloop, seconds (default: 1)"
    )
    xds = p.add_argument_group("xDS")
    xds.add_argument(
        "--ads-api",
        choices=["GRPC", "DELTA_GRPC"],
        default="GRPC",
        help="ADS flavour: state of the world (GRPC) or incremental (DELTA_GRPC); default: GRPC",
    )
    xds.add_argument(
        "--no-ads",
        action="store_true",
        help="no xDS: a static example listener (--listen-port) to a static upstream (--upstream-port)",
    )
    xds.add_argument("--listen-port", type=int, default=None, help="example listener port (with --no-ads)")
    xds.add_argument(
        "--upstream-port", type=int, default=None, help="example upstream port on 127.0.0.1 (with --no-ads)"
    )
    sec = p.add_argument_group("security")
    sec.add_argument(
        "--sds-socket",
        default=None,
        metavar="PATH",
        help="the node agent's SDS Unix socket (meshloop agent --sds-socket): adds the sds-grpc "
        "cluster and node metadata MESHLOOP_SDS=true, so meshloop sends this proxy mTLS config",
    )
    tel = p.add_argument_group("telemetry")
    tel.add_argument(
        "--stats-sink",
        choices=["metrics_service", "open_telemetry", "none"],
        default="metrics_service",
        help="Envoy metrics service stream or OTLP metrics export; default: metrics_service",
    )
    tel.add_argument(
        "--stats-flush-interval", type=float, default=5.0, help="seconds between flushes (default: 5)"
    )
    tel.add_argument(
        "--access-log",
        choices=["http_grpc", "open_telemetry"],
        default="http_grpc",
        help="access logger of the example listener (with --no-ads); default: http_grpc",
    )
    tel.add_argument(
        "--access-log-flush-interval",
        type=float,
        default=1.0,
        help="access log buffer flush interval, seconds (default: 1)",
    )
    tel.add_argument(
        "--access-log-buffer-bytes",
        type=int,
        default=16384,
        help="access log buffer size; 0 sends each entry at once (default: 16384)",
    )
    tel.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry tracing to the collector on the example listener (with --no-ads)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--output", "-o", type=Path, default=None, help="write to FILE (default: standard output)"
    )
    out.add_argument("--format", choices=["json", "yaml"], default=None,
                     help="json or yaml (default: from the --output suffix, else json)")  # fmt: skip
    p.set_defaults(handler=cmd_bootstrap)


def options_from_args(args: argparse.Namespace) -> BootstrapOptions:
    """The :class:`BootstrapOptions` that parsed ``bootstrap`` flags describe."""
    return BootstrapOptions(
        admin_port=args.admin_port, role=args.role, node_id=args.node_id, node_cluster=args.node_cluster,
        workload=args.workload, namespace=args.namespace, version=args.version, pod=args.pod, ip=args.ip,
        mesh_id=args.mesh_id, cluster_id=args.cluster_id, admin_address=args.admin_address,
        meshloop_host=args.meshloop_host, collector_port=args.collector_port, xds_port=args.xds_port,
        ads=not args.no_ads, ads_api=args.ads_api, stats_sink=args.stats_sink,
        stats_flush_interval=args.stats_flush_interval, access_log=args.access_log,
        access_log_flush_interval=args.access_log_flush_interval,
        access_log_buffer_bytes=args.access_log_buffer_bytes, listen_port=args.listen_port,
        upstream_port=args.upstream_port, tracing=args.tracing, connect_timeout=args.connect_timeout,
        sds_socket=args.sds_socket,
    )  # fmt: skip


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Handler of ``meshloop bootstrap``: print or write the bootstrap; 0 on success."""
    yaml_file = args.output is not None and args.output.suffix in (".yaml", ".yml")
    fmt: Literal["json", "yaml"] = args.format or ("yaml" if yaml_file else "json")
    text = render(build_bootstrap(options_from_args(args)), fmt)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0
