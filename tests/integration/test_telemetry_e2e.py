"""Telemetry end to end with real processes: Envoy → meshloop up → ClickHouse.

Also the durability promises: exactly once across a crash (SIGKILL) and across a
store outage, and refusal — counted — once the WAL's disk cap is reached.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2

from benchmarks.accesslog_decode import sample_payloads
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap
from tests.integration.envoy_process import EnvoyProcess, free_port
from tests.integration.meshloop_process import MeshloopProcess, http_get, poll

pytestmark = pytest.mark.integration

NODE = "sidecar~10.0.0.1~productpage-v1-abc.default~default.svc.cluster.local"


def identified_payloads(entries: int, per_message: int = 100) -> list[bytes]:
    payloads = sample_payloads(
        entries=entries, per_message=per_message, start_ns=time.time_ns() - 3600 * 10**9
    )
    first = als_pb2.StreamAccessLogsMessage.FromString(payloads[0])
    first.identifier.node.id = NODE
    first.identifier.log_name = "meshloop_http"
    first.identifier.node.metadata.update({"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default"})
    payloads[0] = first.SerializeToString()
    return payloads


def send_access_logs(port: int, payloads: list[bytes]) -> grpc.RpcError | None:
    """One StreamAccessLogs stream carrying ``payloads``; the error, if any."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(
            "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
            request_serializer=None,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )
        try:
            call(iter(payloads), timeout=30)
        except grpc.RpcError as exc:
            return exc
    return None


def rows(meshloop: MeshloopProcess, table: str = "access_logs") -> int:
    return int(meshloop.query(f"SELECT count() FROM meshloop.{table}"))


@pytest.fixture
def meshloop(tmp_path: Path) -> Iterator[MeshloopProcess]:
    with MeshloopProcess(tmp_path / "data", extra=["--flush-interval", "0.1"]) as process:
        yield process.wait_ready()


def test_real_envoy_access_logs_and_metrics_land_in_clickhouse(
    meshloop: MeshloopProcess, upstream: int, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    listen = free_port()
    options = BootstrapOptions(
        admin_port=free_port(), workload="reviews", namespace="shop", version="v2",
        collector_port=meshloop.collector_port, ads=False, listen_port=listen, upstream_port=upstream,
        access_log_flush_interval=0.1, stats_flush_interval=0.5,
    )  # fmt: skip
    start_envoy(build_bootstrap(options))
    for index in range(20):
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}/item/{index}", timeout=5) as response:
            assert response.status == 200
    poll(lambda: rows(meshloop) == 20, 30, "20 access-log rows")
    summary = meshloop.query(
        "SELECT ReporterWorkload, ReporterNamespace, ReporterVersion, ResponseCode, count(), "
        "countIf(Path LIKE '/item/%') FROM meshloop.access_logs GROUP BY 1, 2, 3, 4"
    )
    assert summary == "reviews\tshop\tv2\t200\t20\t20\n"
    poll(
        lambda: meshloop.query("SELECT sum(Requests) FROM meshloop.access_log_windows") == "20\n",
        30,
        "windows",
    )
    poll(lambda: rows(meshloop, "otel_metrics_gauge") > 0, 30, "Envoy gauges in otel_metrics_gauge")
    assert meshloop.metric('meshloop_collector_messages_received_total{source="envoy_als"}') >= 1
    assert meshloop.metric('meshloop_collector_decode_duration_seconds_count{source="envoy_als"}') >= 1
    status = json.loads(http_get(meshloop.api + "/api/v1/status/collector")[1])
    als = [s for s in status["streams"] if s["source"] == "envoy_als"]
    assert (
        als and als[0]["workload"] == "reviews" and als[0]["namespace"] == "shop" and als[0]["messages"] >= 1
    )


def test_nothing_accepted_is_lost_or_duplicated_across_a_crash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    payloads = identified_payloads(5_000, per_message=100)
    with MeshloopProcess(data, extra=["--flush-interval", "5"]) as first:
        first.wait_ready()
        assert send_access_logs(first.collector_port, payloads) is None
        accepted = 'meshloop_collector_messages_received_total{source="envoy_als"}'
        poll(lambda: first.metric(accepted) == len(payloads), 10, "all messages accepted")
        first.stop(signal.SIGKILL)  # before the 5 s flush: everything is only in the WAL
    with MeshloopProcess(data, extra=["--flush-interval", "0.1"]) as second:
        second.wait_ready()
        poll(lambda: rows(second) >= 5_000, 30, "the replayed rows")
        poll(lambda: second.metric("meshloop_wal_pending_records") == 0, 30, "an empty WAL backlog")
        assert rows(second) == 5_000
        assert int(second.query("SELECT uniqExact(RequestId) FROM meshloop.access_logs")) == 5_000


def test_store_outage_is_ridden_out_in_the_wal_then_capped(tmp_path: Path) -> None:
    """meshloop A stores into meshloop B's ClickHouse; B goes away and comes back."""
    port = free_port()
    store = MeshloopProcess(tmp_path / "store")
    store.args[store.args.index("--clickhouse-http-port") + 1] = str(port)
    store.start().wait_ready()
    url = f"http://127.0.0.1:{port}/remote"
    with MeshloopProcess(
        tmp_path / "collector",
        extra=["--clickhouse-url", url, "--flush-interval", "0.1", "--wal-max-bytes", "4000000"],
    ) as collector:
        collector.wait_ready()
        store.stop()  # the outage
        batch = identified_payloads(2_000, per_message=100)  # ~1.3 MB per stream
        assert send_access_logs(collector.collector_port, batch) is None
        poll(lambda: collector.metric("meshloop_collector_flush_failures_total") > 0, 30, "a failed insert")
        refused = None
        for _ in range(10):  # keep sending until the 4 MB cap refuses
            refused = send_access_logs(collector.collector_port, batch)
            if refused is not None:
                break
        assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "is full" in (refused.details() or "")
        assert (
            collector.metric(
                'meshloop_collector_messages_refused_total{reason="wal_full",source="envoy_als"}'
            )
            >= 1
        )
        accepted = collector.metric('meshloop_collector_messages_received_total{source="envoy_als"}')
        store.start().wait_ready()  # the store returns
        try:
            poll(lambda: collector.metric("meshloop_wal_pending_records") == 0 and accepted > 0, 60, "drain")
            stored = int(store.query("SELECT count() FROM remote.access_logs"))
            assert stored == accepted * 100
        finally:
            store.stop()
