"""Generated bootstraps against a real Envoy: offline validation, and a running Envoy (no xDS)
whose access logs and metrics reach gRPC receivers written here."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from meshloop.collector.gen import metrics_pb2, metrics_service_pb2, metrics_service_pb2_grpc
from meshloop.xds.bootstrap import BootstrapOptions, build_bootstrap, node_id, render
from tests.integration.envoy_process import EnvoyProcess, free_port, validate

pytestmark = pytest.mark.integration

VARIANTS: dict[str, dict[str, Any]] = {
    "ads_sotw": {},
    "ads_delta_gateway_dns": {"role": "gateway", "ads_api": "DELTA_GRPC", "meshloop_host": "localhost"},
    "ads_otel_stats": {"stats_sink": "open_telemetry"},
    "ads_no_stats": {"stats_sink": "none"},
    "ads_sds": {"sds_socket": "/tmp/meshloop-agent.sock"},
    "static_http_grpc": {"ads": False, "listen_port": 10000, "upstream_port": 8000},
    "static_otel_tracing": {
        "ads": False,
        "listen_port": 10000,
        "upstream_port": 8000,
        "access_log": "open_telemetry",
        "stats_sink": "open_telemetry",
        "tracing": True,
    },
}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_envoy_validates_every_variant(variant: str, fmt: Literal["json", "yaml"], tmp_path: Path) -> None:
    config = tmp_path / f"bootstrap.{fmt}"
    config.write_text(render(build_bootstrap(BootstrapOptions(admin_port=9901, **VARIANTS[variant])), fmt))
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


# --- a running Envoy -------------------------------------------------------------------------


class Receiver(als_pb2_grpc.AccessLogServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Records every message of every ALS and metrics-service stream, one list per stream."""

    def __init__(self) -> None:
        self.log_streams: list[list[als_pb2.StreamAccessLogsMessage]] = []
        self.metric_streams: list[list[metrics_service_pb2.StreamMetricsMessage]] = []

    async def StreamAccessLogs(self, request_iterator: Any, context: Any) -> als_pb2.StreamAccessLogsResponse:
        messages: list[als_pb2.StreamAccessLogsMessage] = []
        self.log_streams.append(messages)
        async for message in request_iterator:
            messages.append(message)
        return als_pb2.StreamAccessLogsResponse()

    async def StreamMetrics(
        self, request_iterator: Any, context: Any
    ) -> metrics_service_pb2.StreamMetricsResponse:
        messages: list[metrics_service_pb2.StreamMetricsMessage] = []
        self.metric_streams.append(messages)
        async for message in request_iterator:
            messages.append(message)
        return metrics_service_pb2.StreamMetricsResponse()

    def http_entries(self) -> list[Any]:
        return [e for stream in self.log_streams for m in stream for e in m.http_logs.log_entry]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    """A grpc.aio server serving ALS and the metrics service on a free port."""
    server = grpc.aio.server()
    servicer = Receiver()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(servicer, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(grace=None)


async def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Await until ``check()`` is truthy or ``timeout`` passes (then fail, naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()


def _static_options(collector_port: int, upstream_port: int, **overrides: Any) -> BootstrapOptions:
    return BootstrapOptions(
        admin_port=free_port(),
        workload="reviews",
        namespace="shop",
        version="v2",
        collector_port=collector_port,
        ads=False,
        listen_port=free_port(),
        upstream_port=upstream_port,
        access_log_flush_interval=0.1,
        **overrides,
    )


async def test_access_logs_reach_a_receiver_with_the_node_on_the_first_message(
    receiver: tuple[Receiver, int], upstream: int, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    servicer, collector_port = receiver
    options = _static_options(collector_port, upstream, stats_sink="none")
    envoy = await asyncio.to_thread(start_envoy, build_bootstrap(options))
    url = f"http://127.0.0.1:{options.listen_port}"
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    for i in range(5):
        status, body = await asyncio.to_thread(_get, f"{url}/item/{i}", {"traceparent": traceparent})
        assert (status, body) == (200, f"hello /item/{i}\n")

    entries = await poll(
        lambda: len(servicer.http_entries()) >= 5 and servicer.http_entries(), 10, "5 entries"
    )
    assert sorted(e.request.path for e in entries) == [f"/item/{i}" for i in range(5)]
    assert {e.response.response_code.value for e in entries} == {200}
    assert {e.common_properties.upstream_cluster for e in entries} == {"example_upstream"}
    assert {e.request.request_headers["traceparent"] for e in entries} == {traceparent}

    first = servicer.log_streams[0][0]
    assert first.identifier.log_name == "meshloop_http"
    assert (
        first.identifier.node.id
        == node_id(options)
        == "sidecar~127.0.0.1~reviews.shop~shop.svc.cluster.local"
    )
    assert first.identifier.node.cluster == "reviews.shop"
    metadata = first.identifier.node.metadata.fields
    assert metadata["NAMESPACE"].string_value == "shop"
    assert metadata["LABELS"].struct_value.fields["version"].string_value == "v2"
    assert all(not m.HasField("identifier") for stream in servicer.log_streams for m in stream[1:])
    assert envoy.stats("access_logs")["access_logs.grpc_access_log.logs_written"] >= 5


async def test_metrics_service_stream_reaches_a_receiver_built_on_the_generated_servicer(
    receiver: tuple[Receiver, int], upstream: int, start_envoy: Callable[[dict[str, Any]], EnvoyProcess]
) -> None:
    servicer, collector_port = receiver
    options = _static_options(collector_port, upstream, stats_flush_interval=0.2)
    await asyncio.to_thread(start_envoy, build_bootstrap(options))

    def two_flushes() -> bool:
        return bool(servicer.metric_streams) and len(servicer.metric_streams[0]) >= 2

    await poll(two_flushes, 10, "two metrics flushes")
    first, second = servicer.metric_streams[0][:2]
    assert first.identifier.node.id == node_id(options)
    assert not second.HasField("identifier")
    families = {f.name: f for f in first.envoy_metrics}
    live = families["server.live"]  # Envoy's own stat names; tags become labels
    assert live.type == metrics_pb2.GAUGE
    assert live.metric[0].gauge.value == 1
