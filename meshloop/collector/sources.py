"""What the collector receives: one :class:`Source` per gRPC service it serves."""

from __future__ import annotations

from enum import IntEnum


class Source(IntEnum):
    """A telemetry source; the value is the record kind stored in the WAL (never reuse)."""

    ENVOY_ALS = 1  # envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs
    ENVOY_METRICS = 2  # envoy.service.metrics.v3.MetricsService/StreamMetrics
    OTLP_LOGS = 3  # opentelemetry.proto.collector.logs.v1.LogsService/Export
    OTLP_TRACES = 4  # opentelemetry.proto.collector.trace.v1.TraceService/Export
    OTLP_METRICS = 5  # opentelemetry.proto.collector.metrics.v1.MetricsService/Export

    @property
    def label(self) -> str:
        """The ``source`` label value in metrics."""
        return self.name.lower()
