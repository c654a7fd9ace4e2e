"""``meshloop up`` as a user runs it: a real process, real ports, real chdb."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration.meshloop_process import MeshloopProcess, http_get, poll

pytestmark = pytest.mark.integration


def clickhouse_post(base: str, sql: str, body: bytes | None = None) -> tuple[int, str, dict[str, str]]:
    url = base + "/?" + urllib.parse.urlencode({"query": sql})
    request = urllib.request.Request(url, data=body or b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshloop", *args], capture_output=True, text=True, timeout=timeout
    )


def test_up_serves_health_readiness_metrics_and_ping(tmp_path: Path) -> None:
    with MeshloopProcess(tmp_path / "data") as meshloop:
        meshloop.wait_ready()
        status, body, _ = http_get(meshloop.api + "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        status, body, _ = http_get(meshloop.api + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        status, body, headers = http_get(meshloop.api + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=")
        assert "process_resident_memory_bytes" in body
        assert 'meshloop_store_queries_total{backend="chdb",kind="command"}' in body
        assert "meshloop_store_duration_seconds_bucket" in body
        assert http_get(meshloop.clickhouse + "/ping")[1] == "Ok.\n"
        assert clickhouse_post(meshloop.clickhouse, "SELECT 1")[0] == 200
        body = http_get(meshloop.api + "/metrics")[1]
        assert 'meshloop_clickhouse_http_requests_total{status="200"}' in body
        endpoints = json.loads((tmp_path / "data" / "endpoints.json").read_text())
        assert endpoints["clickhouse_http"] == meshloop.clickhouse


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_within_five_seconds(tmp_path: Path, sig: int) -> None:
    with MeshloopProcess(tmp_path / "data") as meshloop:
        meshloop.wait_ready()
        elapsed = meshloop.stop(sig)
        assert meshloop.proc is not None and meshloop.proc.returncode == 0, meshloop.output()
        assert elapsed < 5
        poll(lambda: "meshloop: stopped" in meshloop.stdout, 5, "the stopped line")
        assert not (tmp_path / "data" / "endpoints.json").exists()


def test_data_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MeshloopProcess(data) as first:
        first.wait_ready()
        assert (
            clickhouse_post(
                first.clickhouse, "CREATE TABLE meshloop.kept (n UInt64) ENGINE = MergeTree ORDER BY n"
            )[0]
            == 200
        )
        status, _, _ = clickhouse_post(
            first.clickhouse, "INSERT INTO meshloop.kept SELECT number FROM numbers(100000)"
        )
        assert status == 200
        first.stop()
    with MeshloopProcess(data) as second:
        second.wait_ready()
        status, body, _ = clickhouse_post(second.clickhouse, "SELECT count(), sum(n) FROM meshloop.kept")
        assert (status, body) == (200, "100000\t4999950000\n")
        assert "applied: none" in second.output()


def test_second_process_on_the_same_data_dir_is_refused_with_the_pid(tmp_path: Path) -> None:
    with MeshloopProcess(tmp_path / "data") as first:
        first.wait_ready()
        second = run_cli(
            "up", "--data-dir", str(tmp_path / "data"), "--http-port", "0", "--clickhouse-http-port", "0"
        )
        assert second.returncode == 1
        assert f"PID {first.proc.pid}" in second.stderr  # type: ignore[union-attr]
        assert "Traceback" not in second.stderr
        assert http_get(first.api + "/healthz")[0] == 200


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("up", "--data-dir", str(tmp_path / "d"), "--http-port", str(port))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "--http-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "meshloop.yaml"
    config.write_text("http_port: 8080\nclickhouse_htp_port: 9\n")
    result = run_cli("up", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(config) in lines[0] and "clickhouse_htp_port" in lines[0] and "unknown setting" in lines[0]


def test_unreachable_server_is_retried_and_ready_once_it_appears(tmp_path: Path) -> None:
    """A ClickHouse server that is down at start: /readyz 503, retries, then ready."""
    port = free_port()
    url = f"http://default:@127.0.0.1:{port}/remote"
    with MeshloopProcess(tmp_path / "a", extra=["--clickhouse-url", url]) as client:
        poll(lambda: "HTTP API" in client.endpoints, 30, "the HTTP API line")
        poll(lambda: "retrying" in "\n".join(client.stderr), 30, "a retry message")
        status, body, _ = http_get(client.api + "/readyz")
        assert status == 503 and "unreachable" in json.loads(body)["reason"]
        assert not client.exited()
        # The server appears: an embedded meshloop serving ClickHouse HTTP on that port.
        server = MeshloopProcess(tmp_path / "b")
        server.args[server.args.index("--clickhouse-http-port") + 1] = str(port)
        with server:
            server.wait_ready()
            poll(
                lambda: http_get(client.api + "/readyz")[0] == 200, 40, "readiness after the server appeared"
            )
            client.wait_ready()
            status, body, _ = clickhouse_post(
                server.clickhouse, "SELECT count() FROM remote.schema_migrations"
            )
            assert status == 200 and int(body) >= 1
            assert client.stop() < 5
            assert client.proc is not None and client.proc.returncode == 0


def test_query_command_prints_results_and_clickhouse_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MeshloopProcess(data) as meshloop:
        meshloop.wait_ready()
        ok = run_cli("query", "SELECT 40 + 2 AS answer", "--data-dir", str(data), "--format", "CSV")
        assert (ok.returncode, ok.stdout) == (0, "42\n")
        pretty = run_cli("query", "SELECT 'x' AS col", "--data-dir", str(data))
        assert pretty.returncode == 0 and "col" in pretty.stdout and "x" in pretty.stdout
        bad = run_cli("query", "SELEC 1", "--data-dir", str(data))
        assert bad.returncode == 1
        assert "Code: 62" in bad.stderr and "SYNTAX_ERROR" in bad.stderr
        assert "Traceback" not in bad.stderr
    down = run_cli("query", "SELECT 1", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach ClickHouse" in down.stderr


def test_schema_newer_than_the_code_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MeshloopProcess(data) as meshloop:
        meshloop.wait_ready()
        status, body, _ = clickhouse_post(
            meshloop.clickhouse,
            "INSERT INTO meshloop.schema_migrations (version, name, checksum) VALUES (999, 'future', '')",
        )
        assert status == 200, body
        meshloop.stop()
    result = run_cli("up", "--data-dir", str(data), "--http-port", "0", "--clickhouse-http-port", "0")
    assert result.returncode == 1
    assert "999" in result.stderr and "upgrade meshloop" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [[], ["up"], ["query"], ["schema"], ["bootstrap"], ["agent"], ["proxy-status"], ["validate"]]
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: meshloop" in result.stdout
    assert len(result.stdout.splitlines()) > 5


def test_clickhouse_connect_from_another_process_inserts_a_million_rows(tmp_path: Path) -> None:
    """The acceptance check: a million rows in through HTTP, the same count and sums out."""
    import clickhouse_connect
    import pyarrow as pa

    with MeshloopProcess(tmp_path / "data") as meshloop:
        meshloop.wait_ready()
        port = int(meshloop.clickhouse.rsplit(":", 1)[1])
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        client.command("CREATE TABLE meshloop.million (n UInt64, x Float64) ENGINE = MergeTree ORDER BY n")
        rows = 1_000_000
        numbers = pa.array(range(rows), type=pa.uint64())
        client.insert_arrow(
            "meshloop.million", pa.table({"n": numbers, "x": pa.compute.divide(numbers, 2.0)})
        )
        result = client.query("SELECT count(), sum(n), sum(x) FROM meshloop.million").result_rows
        assert result == [(rows, rows * (rows - 1) // 2, rows * (rows - 1) / 4)]
        client.close()


def test_status_endpoints_need_the_admin_token_when_one_is_set(tmp_path: Path) -> None:
    with MeshloopProcess(tmp_path / "data", extra=["--admin-token", "s3cret"]) as meshloop:
        meshloop.wait_ready()
        assert http_get(meshloop.api + "/api/v1/status")[0] == 401
        assert http_get(meshloop.api + "/healthz")[0] == 200
        request = urllib.request.Request(
            meshloop.api + "/api/v1/status/settings", headers={"Authorization": "Bearer s3cret"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            settings = json.loads(response.read())
        assert settings["admin_token"] == "***" and settings["collector_port"] == 0


def test_a_ca_key_others_can_read_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MeshloopProcess(data) as first:
        first.wait_ready()
        assert (data / "ca" / "root-key.pem").stat().st_mode & 0o777 == 0o600
        first.stop()
    (data / "ca" / "root-key.pem").chmod(0o644)
    result = run_cli(
        "up", "--data-dir", str(data), "--http-port", "0", "--clickhouse-http-port", "0",
        "--collector-port", "0", "--xds-secure-port", "0",
    )  # fmt: skip
    assert result.returncode == 1
    assert "chmod 600" in result.stderr and "root-key.pem" in result.stderr
    assert "Traceback" not in result.stderr
