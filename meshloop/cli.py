"""The ``meshloop`` command line: one entry point, one subcommand per job.

Errors end in one line naming what was wrong (exit 2 for bad settings or usage, 1 for
everything else), never in a bare traceback; ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshloop import __version__
from meshloop.config import OPTIONS, Option, Settings, load_settings
from meshloop.errors import ConfigError, MeshloopError

DESCRIPTION = """\
meshloop — a telemetry-driven service-mesh control plane.

Envoy proxies stream access logs and metrics to meshloop; it stores them in
ClickHouse (embedded chdb by default), and adapts the mesh from that live telemetry.
"""

EPILOG = """\
settings: every flag of 'meshloop up' can also be set as MESHLOOP_<NAME> in the
environment or as <name>: in the YAML file given by --config; flags win over the
environment, the environment over the file.

examples:
  meshloop up                                  # embedded store under ./meshloop-data
  meshloop up --http-port 0 --clickhouse-http-port 0
  meshloop query "SELECT count() FROM meshloop.access_logs"
  meshloop schema --clickhouse-cluster prod     # the DDL a cluster would receive
  meshloop bootstrap --admin-port 15000 --workload reviews --version v2 > envoy.json
  meshloop proxy-status                         # which proxies are connected and in sync
  meshloop validate examples/bookinfo           # check Istio YAML: file:line: Kind/ns/name: field: message
  meshloop up --mesh-dir examples/bookinfo      # serve that mesh to Envoys over ADS
  meshloop config dump --node sidecar~10.0.0.1~reviews-v2-1.default~default.svc.cluster.local \
      --mesh-dir examples/bookinfo               # what that proxy would receive, as JSON
"""


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    default = option.default
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument(
        option.flag,
        dest=option.name,
        type=str,
        default=None,
        metavar=option.name.split("_")[-1].upper(),
        help=f"{option.help}{shown}; env {option.env}",
    )


def _settings_from(args: argparse.Namespace) -> Settings:
    flags = {o.name: getattr(args, o.name) for o in OPTIONS if hasattr(args, o.name)}
    return load_settings(flags=flags, config_file=args.config)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="meshloop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"meshloop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run meshloop: store, HTTP API and ClickHouse HTTP interface",
        description="Run meshloop in the foreground until SIGINT or SIGTERM. Prints where "
        "each endpoint listens. The store is migrated at start; /readyz turns 200 once done.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    up.add_argument("--config", type=Path, default=None, help="YAML settings file; env MESHLOOP_CONFIG")
    for option in OPTIONS:
        _add_option(up, option)
    up.set_defaults(handler=cmd_up)

    query = sub.add_parser(
        "query",
        help="run SQL against a running meshloop or a ClickHouse server",
        description="Run one SQL statement through the ClickHouse HTTP interface of the "
        "meshloop running on --data-dir (or --url / the configured --clickhouse-url) and "
        "print the result.",
    )
    query.add_argument("sql", help="the statement; '-' reads it from standard input")
    query.add_argument(
        "--format",
        default="PrettyCompact",
        help="output format (default: PrettyCompact; e.g. CSV, JSON, TabSeparated)",
    )
    query.add_argument("--url", default=None, help="ClickHouse HTTP URL, e.g. http://user:pass@host:8123")
    query.add_argument("--config", type=Path, default=None, help="YAML settings file")
    query.add_argument("--data-dir", dest="data_dir", default=None, help="data dir of the running meshloop")
    query.add_argument(
        "--database", dest="database", default=None, help="default database (default: meshloop)"
    )
    query.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    query.set_defaults(handler=cmd_query)

    schema = sub.add_parser(
        "schema",
        help="print the DDL meshloop applies (single node or cluster)",
        description="Print every migration's SQL, as a single server or a cluster would receive it.",
    )
    schema.add_argument("--clickhouse-cluster", dest="clickhouse_cluster", default=None)
    schema.add_argument("--database", default="meshloop")
    schema.add_argument("--retention-days", dest="retention_days", type=int, default=30)
    schema.set_defaults(handler=cmd_schema)

    proxy_status = sub.add_parser(
        "proxy-status",
        help="xDS sync state of every connected proxy (like istioctl proxy-status)",
        description="Ask the running meshloop which proxies are connected and whether each "
        "xDS type (CDS, LDS, EDS, RDS) is SYNCED, NOT SENT, STALE or NACKed.",
    )
    proxy_status.add_argument(
        "--data-dir", dest="data_dir", default=None, help="data dir of the running meshloop"
    )
    proxy_status.add_argument("--config", type=Path, default=None, help="YAML settings file")
    proxy_status.add_argument("--admin-token", dest="admin_token", default=None, help="bearer token, if set")
    proxy_status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    proxy_status.set_defaults(handler=cmd_proxy_status)

    from meshloop.mesh import add_validate_command

    add_validate_command(sub)

    from meshloop.xds.dump import add_config_command

    add_config_command(sub)

    from meshloop.xds.bootstrap import add_bootstrap_command

    add_bootstrap_command(sub)

    from meshloop.identity.agent import add_agent_command

    add_agent_command(sub)
    return parser


# polars' own thread pool on top of the collector's pipeline threads (decoder,
# inserter, ClickHouse's) only adds contention: measured with
# ``benchmarks/ingest_e2e.py`` on 2 cores, one polars thread ingests 6-10% more per
# CPU-second and per wall second. Set before polars is imported; the environment wins.
POLARS_THREADS_DEFAULT = "1"


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    os.environ.setdefault("POLARS_MAX_THREADS", POLARS_THREADS_DEFAULT)
    from meshloop.runtime import run

    return asyncio.run(run(settings))


def cmd_query(args: argparse.Namespace) -> int:
    from meshloop.query_client import run_query

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    flags: dict[str, Any] = {"data_dir": args.data_dir, "database": args.database}
    settings = load_settings(flags=flags, config_file=args.config)
    return run_query(settings, sql, fmt=args.format, url=args.url, timeout=args.timeout)


def cmd_proxy_status(args: argparse.Namespace) -> int:
    import json

    from meshloop.api.client import get_json
    from meshloop.xds.status import proxy_status_table

    flags = {"data_dir": args.data_dir, "admin_token": args.admin_token}
    status = get_json(load_settings(flags=flags, config_file=args.config), "/api/v1/status/xds")
    print(
        json.dumps(status, indent=2) if args.json else proxy_status_table(status),
        end="" if not args.json else "\n",
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from meshloop.store.migrations import render_cluster_sql

    print(render_cluster_sql(args.database, args.clickhouse_cluster, args.retention_days))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshloop`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"meshloop: config error: {exc}", file=sys.stderr)
        return 2
    except MeshloopError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"meshloop: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the top of the program: never a bare traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"meshloop: unexpected error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
