# ruff: noqa: E501  (SQL lines are kept whole for readability)
"""Grafana dashboards for meshloop's tables, built as data and written as JSON.

Panels query ClickHouse through Grafana's official ClickHouse data source
(``grafana-clickhouse-datasource``, https://grafana.com/grafana/plugins/grafana-clickhouse-datasource/)
with its macros: ``$__timeFilter(col)``, ``$__timeInterval(col)``, ``$__interval_s``,
``$__conditionalAll(cond, $var)``. The generated files live in ``dashboards/``;
``python -m meshloop.dashboards dashboards/`` rewrites them, and a test checks that the
committed files match and that every panel's SQL runs on real ClickHouse.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from meshloop.store.schema import latency_quantile_sql

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
DB = "meshloop"
SERVICE_FILTER = "$__conditionalAll(DestinationService IN (${service:singlequote}), $service)"


def _sql_panel(
    panel_id: int, title: str, sql: str, kind: str, grid: tuple[int, int, int, int], unit: str = ""
) -> dict[str, Any]:
    x, y, w, h = grid
    fmt = {"timeseries": 0, "table": 1}[kind]
    return {
        "id": panel_id,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "queryType": "timeseries" if kind == "timeseries" else "table",
                "format": fmt,
                "rawSql": sql,
            }
        ],
    }


def edges_dashboard() -> dict[str, Any]:
    """Golden signals per service and edge, from the 1 s windows and the raw logs."""
    windows = f"{DB}.access_log_windows"
    buckets = "sumForEach(LatencyBuckets)"
    p50, p99 = latency_quantile_sql(0.5, buckets), latency_quantile_sql(0.99, buckets)
    panels = [
        _sql_panel(1, "Requests per second by destination", (
            f"SELECT $__timeInterval(Window) AS time, DestinationService, sum(Requests) / $__interval_s AS rps\n"
            f"FROM {windows}\nWHERE $__timeFilter(Window) AND {SERVICE_FILTER}\n"
            "GROUP BY time, DestinationService ORDER BY time"), "timeseries", (0, 0, 12, 8), "reqps"),
        _sql_panel(2, "5xx ratio by destination", (
            f"SELECT $__timeInterval(Window) AS time, DestinationService,\n"
            "  sum(Errors5xx) / greatest(sum(Requests), 1) AS error_ratio\n"
            f"FROM {windows}\nWHERE $__timeFilter(Window) AND {SERVICE_FILTER}\n"
            "GROUP BY time, DestinationService ORDER BY time"), "timeseries", (12, 0, 12, 8), "percentunit"),
        _sql_panel(3, "Latency p50 / p99 by destination (ms)", (
            f"SELECT $__timeInterval(Window) AS time, DestinationService,\n  {p50} AS p50_ms,\n  {p99} AS p99_ms\n"
            f"FROM {windows}\nWHERE $__timeFilter(Window) AND {SERVICE_FILTER}\n"
            "GROUP BY time, DestinationService ORDER BY time"), "timeseries", (0, 8, 24, 9), "ms"),
        _sql_panel(4, "Edges: source → destination", (
            "SELECT SourceWorkload AS source, DestinationService AS destination, DestinationSubset AS subset,\n"
            "  sum(Requests) AS requests, sum(Errors5xx) / greatest(sum(Requests), 1) AS error_ratio,\n"
            f"  {p99} AS p99_ms\n"
            f"FROM {windows}\nWHERE $__timeFilter(Window) AND {SERVICE_FILTER}\n"
            "GROUP BY source, destination, subset ORDER BY requests DESC LIMIT 100"), "table", (0, 17, 24, 9)),
        _sql_panel(5, "Envoy response flags", (
            "SELECT $__timeInterval(Timestamp) AS time, arrayJoin(ResponseFlags) AS flag, count() AS entries\n"
            f"FROM {DB}.access_logs\nWHERE $__timeFilter(Timestamp) AND {SERVICE_FILTER}\n"
            "GROUP BY time, flag ORDER BY time"), "timeseries", (0, 26, 12, 8)),
        _sql_panel(6, "Recent errors (with trace ids)", (
            "SELECT Timestamp, SourceWorkload, DestinationService, Method, Path, ResponseCode,\n"
            "  arrayStringConcat(ResponseFlags, ',') AS flags, Duration / 1e6 AS duration_ms, TraceId\n"
            f"FROM {DB}.access_logs\nWHERE $__timeFilter(Timestamp) AND ResponseCode >= 500 AND {SERVICE_FILTER}\n"
            "ORDER BY Timestamp DESC LIMIT 200"), "table", (12, 26, 12, 8)),
    ]  # fmt: skip
    return {
        "uid": "meshloop-edges",
        "title": "meshloop — service edges",
        "tags": ["meshloop", "envoy", "service-mesh"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "grafana-clickhouse-datasource",
                    "label": "ClickHouse",
                },
                {
                    "name": "service",
                    "label": "Destination",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": f"SELECT DISTINCT DestinationService FROM {windows} WHERE $__timeFilter(Window)",
                    "multi": True,
                    "includeAll": True,
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


DASHBOARDS = {"meshloop-edges.json": edges_dashboard}


def write_all(directory: Path) -> list[Path]:
    """Write every dashboard as JSON into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = directory / name
        path.write_text(json.dumps(build(), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "dashboards")):
        print(written_path)
