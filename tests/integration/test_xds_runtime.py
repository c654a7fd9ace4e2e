"""The xDS server inside ``meshloop up``: a real Envoy connects over ADS; its status is
visible through ``meshloop proxy-status`` and its events land in ``xds_events``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap, node_id
from tests.integration.envoy_process import EnvoyProcess, free_port
from tests.integration.meshloop_process import MeshloopProcess, poll

pytestmark = pytest.mark.integration


def test_connected_envoy_shows_in_proxy_status_and_xds_events(
    tmp_path: Path, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    data = tmp_path / "data"
    with MeshloopProcess(data) as meshloop:
        meshloop.wait_ready()
        options = BootstrapOptions(
            admin_port=free_port(), workload="ratings", namespace="shop", xds_port=meshloop.xds_port,
            collector_port=meshloop.collector_port, stats_sink="none",
        )  # fmt: skip
        bootstrap = build_bootstrap(options)
        envoy = EnvoyProcess(bootstrap, tmp_path, name="ads").start()  # no config yet: not "ready"
        try:
            node = node_id(options)

            def proxy_status() -> str:
                result = subprocess.run(
                    [sys.executable, "-m", "meshloop", "proxy-status", "--data-dir", str(data)],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr
                return result.stdout

            def listed() -> str:
                table = proxy_status()
                return table if node in table else ""

            table = poll(listed, 30, "the proxy in proxy-status")
            assert table.splitlines()[0].split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "VERSION"]
            assert "NOT SENT" in table
            poll(
                lambda: (
                    meshloop.query(
                        "SELECT count() FROM meshloop.xds_events "
                        f"WHERE node_id = '{node}' AND kind = 'CONNECT'"
                    ).strip()
                    == "1"
                ),
                30,
                "a CONNECT event in xds_events",
            )
        finally:
            envoy.stop()
