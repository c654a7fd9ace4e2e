"""``meshloop validate PATH...``: check mesh config files the way the server would load them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from meshloop.mesh.loader import load
from meshloop.mesh.validation import validate

_EPILOG = """\
exit status: 0 no errors (warnings allowed), 1 errors found, 2 a path does not exist.

examples:
  meshloop validate examples/bookinfo
  meshloop validate --quiet mesh/ extra.yaml && echo ok
"""


def add_validate_command(subparsers: Any) -> None:
    """Register ``meshloop validate`` on an argparse ``add_subparsers()`` object (``handler`` set)."""
    p = subparsers.add_parser(
        "validate",
        help="check Istio-style mesh config files (file:line errors)",
        description="Load YAML files or directories (recursively, *.yaml/*.yml) of Istio resources,\n"
        "Kubernetes Services and EndpointSlices; print every problem as\n"
        "'file:line: Kind/namespace/name: field: message', then a summary.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a YAML file or a directory")
    p.add_argument("--quiet", "-q", action="store_true", help="print errors only, no warnings and no summary")
    p.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print issues one per line and a summary; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"meshloop validate: {path}: no such file or directory", file=err)
        return 2
    config, issues = load(args.paths)
    issues = sorted(set(issues) | set(validate(config)))
    errors = sum(i.is_error for i in issues)
    warnings = len(issues) - errors
    for issue in issues:
        if issue.is_error:
            print(issue.render(), file=out)
        elif not args.quiet:
            print(f"{issue.render()} (warning)", file=out)
    if not args.quiet:
        print(f"{len(config.resources)} resources, {errors} errors, {warnings} warnings", file=out)
    return 1 if errors else 0
