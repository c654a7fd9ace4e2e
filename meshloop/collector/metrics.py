"""The collector's Prometheus metrics, in one place so every drop is counted once.

Names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/):
``_total`` for counters, base units (seconds, bytes), ``source`` names where data
came from (``envoy_als``, ``envoy_metrics``, ``otlp_logs``, ``otlp_traces``,
``otlp_metrics``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "meshloop_collector_messages_received_total",
    "gRPC messages accepted into the write-ahead log, by source.",
    ["source"],
)
BYTES_RECEIVED = Counter(
    "meshloop_collector_received_bytes_total",
    "Bytes of gRPC messages accepted into the write-ahead log, by source.",
    ["source"],
)
MESSAGES_REFUSED = Counter(
    "meshloop_collector_messages_refused_total",
    "gRPC messages refused at intake, by source and reason (wal_full, malformed, no_identifier).",
    ["source", "reason"],
)
ENTRIES_STORED = Counter(
    "meshloop_collector_entries_stored_total",
    "Rows written to the store, by source and table.",
    ["source", "table"],
)
RECORDS_QUARANTINED = Counter(
    "meshloop_collector_records_quarantined_total",
    "Accepted messages that could not be decoded; kept under <data_dir>/quarantine, by source.",
    ["source"],
)
DECODE_SECONDS = Histogram(
    "meshloop_collector_decode_duration_seconds",
    "Time to decode one batch of messages into columns, by source.",
    ["source"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FLUSH_SECONDS = Histogram(
    "meshloop_collector_flush_duration_seconds",
    "Time to decode, insert and commit one batch.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLUSH_FAILURES = Counter(
    "meshloop_collector_flush_failures_total",
    "Batch inserts that failed and will be retried (the batch stays in the WAL).",
)
ROWS_QUARANTINED = Counter(
    "meshloop_collector_rows_quarantined_total",
    "Decoded rows ClickHouse rejected for their content; kept as Parquet under <data_dir>/quarantine.",
    ["table"],
)
STREAMS_ACTIVE = Gauge(
    "meshloop_collector_streams_active",
    "Open gRPC streams, by source.",
    ["source"],
)
WAL_BYTES = Gauge("meshloop_wal_bytes", "Bytes held by the write-ahead log's segments.")
WAL_SEGMENTS = Gauge("meshloop_wal_segments", "Segment files of the write-ahead log.")
WAL_PENDING_RECORDS = Gauge(
    "meshloop_wal_pending_records", "Records accepted but not yet committed to the store."
)
WINDOW_LAG = Gauge(
    "meshloop_collector_window_lag_seconds",
    "How far the newest finalized 1 s window trails the collector's clock.",
)
