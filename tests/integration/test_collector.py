"""The collector end to end in process: real gRPC, real WAL files, real chdb.

Streams are sent with the xds-protos / opentelemetry-proto client stubs over a real
grpc.aio channel; results are read back from ClickHouse, polling to a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2

from benchmarks.accesslog_decode import sample_payloads as _sample_payloads
from meshloop.collector.service import Collector
from meshloop.config import Settings
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate

pytestmark = pytest.mark.integration


def sample_payloads(entries: int, per_message: int) -> list[bytes]:
    """Entries from an hour ago: inside the table TTL, far past the window lateness."""
    return _sample_payloads(entries=entries, per_message=per_message, start_ns=time.time_ns() - 3600 * 10**9)


async def poll_async(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def identified(
    payload: bytes, node_id: str = "sidecar~10.0.0.1~productpage-v1-abc.default~default.svc.cluster.local"
) -> bytes:
    message = als_pb2.StreamAccessLogsMessage.FromString(payload)
    message.identifier.node.id = node_id
    message.identifier.node.cluster = "productpage.default"
    message.identifier.log_name = "meshloop_http"
    message.identifier.node.metadata.update({"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default"})
    return message.SerializeToString()


async def stream_raw(port: int, payloads: list[bytes]) -> grpc.aio.AioRpcError | None:
    """Send raw payloads on one StreamAccessLogs stream; return the error, if any."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(
            "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
            request_serializer=None,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )

        async def requests() -> AsyncIterator[bytes]:
            for payload in payloads:
                yield payload

        try:
            await call(requests())
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


@pytest.fixture
async def collector(embedded_store: EmbeddedStore, tmp_path: Path) -> AsyncIterator[Collector]:
    await asyncio.to_thread(migrate, embedded_store)
    settings = Settings(
        data_dir=tmp_path, collector_port=0, flush_interval=0.05, database=embedded_store.database
    )
    running = Collector(settings, embedded_store)
    await running.start()
    yield running
    await running.stop()


def count(store: EmbeddedStore, table: str, where: str = "1") -> int:
    return store.query_rows(f"SELECT count() FROM {store.database}.{table} WHERE {where}")[0][0]


async def test_access_log_stream_lands_raw_and_in_windows(
    collector: Collector, embedded_store: EmbeddedStore
) -> None:
    payloads = sample_payloads(entries=2_000, per_message=100)
    payloads[0] = identified(payloads[0])
    assert await stream_raw(collector.port, payloads) is None
    await poll_async(lambda: count(embedded_store, "access_logs") == 2_000, 30, "2,000 rows")
    rows = embedded_store.query_rows(
        f"SELECT ReporterWorkload, DestinationService, DestinationSubset, uniqExact(BatchId) > 0 AS batched "
        f"FROM {embedded_store.database}.access_logs GROUP BY 1, 2, 3"
    )
    assert rows == [("productpage-v1", "reviews.default.svc.cluster.local", "v2", 1)]
    # These entries are an hour old: far later than the lateness, so raw only.
    assert count(embedded_store, "access_log_windows") == 0


async def test_first_message_without_identifier_is_refused(
    collector: Collector, embedded_store: EmbeddedStore
) -> None:
    error = await stream_raw(collector.port, sample_payloads(entries=100, per_message=100))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "identifier" in (error.details() or "")


async def test_malformed_first_message_is_invalid_argument(collector: Collector) -> None:
    error = await stream_raw(collector.port, [b"\xff\xff\xff garbage"])
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamAccessLogsMessage" in (error.details() or "")


async def test_malformed_later_message_is_quarantined_and_the_rest_lands(
    collector: Collector, embedded_store: EmbeddedStore, tmp_path: Path
) -> None:
    good = sample_payloads(entries=300, per_message=100)
    good[0] = identified(good[0])
    assert await stream_raw(collector.port, [good[0], b"\x0a\xff\xff\xff\xff", good[1], good[2]]) is None
    await poll_async(lambda: count(embedded_store, "access_logs") == 300, 30, "the 300 good rows")
    quarantined = await poll_async(
        lambda: list((tmp_path / "quarantine").glob("*.pb")), 10, "a quarantine file"
    )
    assert quarantined[0].read_bytes() == b"\x0a\xff\xff\xff\xff"


async def test_oversized_message_is_resource_exhausted(collector: Collector) -> None:
    error = await stream_raw(collector.port, [b"\x00" * (collector.settings.max_message_bytes + 1)])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_otlp_logs_export_lands_in_otel_logs(
    collector: Collector, embedded_store: EmbeddedStore
) -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    attribute = resource_logs.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    record = resource_logs.scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    record.severity_text, record.severity_number = "ERROR", logs_pb2.SEVERITY_NUMBER_ERROR
    record.body.string_value = "payment failed"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as channel:
        await logs_service_pb2_grpc.LogsServiceStub(channel).Export(request)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export", request_serializer=None
            )(b"\xff\xfe garbage")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await poll_async(
        lambda: count(embedded_store, "otel_logs", "ServiceName = 'checkout'") == 1, 30, "the log row"
    )
    assert embedded_store.query_rows(
        f"SELECT Body, SeverityText FROM {embedded_store.database}.otel_logs"
    ) == [("payment failed", "ERROR")]


async def test_recent_entries_reach_the_window_table_and_the_live_feed(
    collector: Collector, embedded_store: EmbeddedStore
) -> None:
    now = time.time_ns()
    message = als_pb2.StreamAccessLogsMessage.FromString(
        identified(sample_payloads(entries=50, per_message=50)[0])
    )
    for index, entry in enumerate(message.http_logs.log_entry):
        entry.common_properties.start_time.FromNanoseconds(now - 2_000_000_000 + index * 1_000_000)
    subscription = collector.windows.subscribe()
    assert await stream_raw(collector.port, [message.SerializeToString()]) is None
    await poll_async(
        lambda: (
            embedded_store.query_rows(
                f"SELECT sum(Requests) FROM {embedded_store.database}.access_log_windows"
            )[0][0]
            == 50
        ),
        30,
        "50 requests in the windows",
    )
    published = 0
    async with asyncio.timeout(20):
        async for item in subscription:
            published += item.frame["Requests"].sum() if item.frame.height else 0
            if published >= 50:
                break
    assert published == 50
    subscription.close()
