"""The mesh inside ``meshloop up``: Istio YAML in --mesh-dir → a real Envoy over ADS;
overrides through the HTTP API; an invalid change keeps the last good config."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from tests.integration.envoy_process import EnvoyProcess, free_port
from tests.integration.http_servers import named_servers
from tests.integration.meshes import REVIEWS_MESH
from tests.integration.meshloop_process import MeshloopProcess, http_get, poll

pytestmark = pytest.mark.integration

HOST = "reviews.shop.svc.cluster.local"


@pytest.fixture
def versions() -> Iterator[dict[str, int]]:
    with named_servers("v1", "v2") as ports:
        yield ports


def answer(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        response = conn.getresponse()
        return response.read().decode().strip() if response.status == 200 else f"HTTP {response.status}"
    except OSError:
        return ""
    finally:
        conn.close()


def api(
    meshloop: MeshloopProcess, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(meshloop.api + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mesh_dir_overrides_and_invalid_changes_with_a_real_envoy(
    tmp_path: Path, versions: dict[str, int], start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    mesh_dir, svc = tmp_path / "mesh", free_port()
    mesh_dir.mkdir()
    mesh_file = mesh_dir / "reviews.yaml"
    mesh_file.write_text(REVIEWS_MESH.format(svc=svc, w1=100, w2=0, **versions))
    with MeshloopProcess(tmp_path / "data", extra=["--mesh-dir", str(mesh_dir)]) as meshloop:
        meshloop.wait_ready()
        options = BootstrapOptions(
            admin_port=free_port(), xds_port=meshloop.xds_port, collector_port=meshloop.collector_port,
            workload="productpage", namespace="shop", stats_sink="none",
        )  # fmt: skip
        bootstrap = build_bootstrap(options)
        bootstrap["node"]["metadata"]["MESHLOOP_OUTBOUND_ADDRESS"] = "127.0.0.1"
        start_envoy(bootstrap)
        poll(lambda: answer(svc) == "v1", 30, "routing to v1 from the mesh dir")

        # An override from the API: all traffic to v2, recorded, visible, removable.
        status, body = api(
            meshloop,
            "PUT",
            "/api/v1/overrides/route-weights",
            {"host": HOST, "weights": {"v1": 0, "v2": 100}},
        )
        assert status == 200, body
        pushed = time.monotonic()
        poll(lambda: all(answer(svc) == "v2" for _ in range(5)), 10, "the override served")
        assert time.monotonic() - pushed < 1.0
        mesh = api(meshloop, "GET", "/api/v1/mesh")[1]
        assert mesh["xds"]["overrides"]["route_weights"] == [
            {"host": HOST, "route": None, "weights": {"v1": 0, "v2": 100}}
        ]
        status, body = api(
            meshloop,
            "PUT",
            "/api/v1/overrides/route-weights",
            {"host": HOST, "weights": {"v1": 50, "v2": 40}},
        )
        assert status == 400 and "must total 100" in body["error"]
        assert api(meshloop, "DELETE", f"/api/v1/overrides/route-weights?host={HOST}")[0] == 200
        poll(lambda: all(answer(svc) == "v1" for _ in range(5)), 10, "back to the mesh dir's routing")

        # An invalid change (weights 60 + 60): refused, the last good config keeps serving.
        mesh_file.write_text(REVIEWS_MESH.format(svc=svc, w1=60, w2=60, **versions))
        rejection = poll(
            lambda: api(meshloop, "GET", "/api/v1/mesh")[1]["config"].get("last_rejection"), 10, "a rejection"
        )
        assert any(
            f"{mesh_file}:" in reason and "must total 100" in reason for reason in rejection["reasons"]
        )
        assert all(answer(svc) == "v1" for _ in range(10))
        assert any("mesh config refused" in line for line in meshloop.stderr)

        # A valid change is served.
        mesh_file.write_text(REVIEWS_MESH.format(svc=svc, w1=0, w2=100, **versions))
        poll(lambda: all(answer(svc) == "v2" for _ in range(5)), 10, "the new mesh dir routing")
        changes = poll(
            lambda: (
                meshloop.query(
                    "SELECT kind, action FROM meshloop.mesh_changes ORDER BY time FORMAT CSV"
                ).split()
                if meshloop.query("SELECT count() FROM meshloop.mesh_changes").strip() == "5"
                else None
            ),
            15,
            "five recorded mesh changes",
        )
        assert changes == [
            '"config","accepted"', '"route_weights","set"', '"route_weights","removed"',
            '"config","rejected"', '"config","accepted"',
        ]  # fmt: skip
        assert http_get(meshloop.api + "/api/v1/status/mesh")[0] == 200
