"""The Grafana dashboards: committed JSON is current, and every panel's SQL runs on
real ClickHouse (chdb) with the data source's macros expanded as the plugin does."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from benchmarks.accesslog_decode import STREAM, sample_payloads
from meshloop.accesslog.decode import decode_batch
from meshloop.accesslog.windows import window_partials
from meshloop.dashboards import DASHBOARDS, write_all
from meshloop.store.embedded import EmbeddedStore
from meshloop.store.migrations import migrate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def expand(sql: str, database: str, start: int, end: int, services: list[str] | None) -> str:
    """Expand grafana-clickhouse-datasource macros the way the plugin does."""
    sql = sql.replace("meshloop.", f"{database}.")
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 10 second)", sql)
    sql = sql.replace("$__interval_s", "10")
    if services is None:
        sql = re.sub(r"\$__conditionalAll\((.*?), \$service\)", "1 = 1", sql)
    else:
        quoted = ", ".join(f"'{s}'" for s in services)
        sql = re.sub(r"\$__conditionalAll\((.*?), \$service\)", r"\1", sql).replace(
            "${service:singlequote}", quoted
        )
    return sql


def test_committed_dashboards_are_current(tmp_path: Path) -> None:
    for path in write_all(tmp_path):
        assert json.loads(path.read_text()) == json.loads((ROOT / "dashboards" / path.name).read_text()), (
            path.name
        )


@pytest.mark.parametrize("services", [None, ["reviews.default.svc.cluster.local"]])
def test_every_panel_query_runs_and_returns_the_traffic(
    embedded_store: EmbeddedStore, services: list[str] | None
) -> None:
    migrate(embedded_store, ttl_days=0)
    now = time.time_ns()
    frame = decode_batch(sample_payloads(entries=2_000, start_ns=now - 60 * 10**9), STREAM, batch_id="dash")
    partials, late = window_partials(frame, now, 3600 * 10**9)
    assert late == 0
    embedded_store.insert_df("access_logs", frame)
    embedded_store.insert_df("access_log_windows", partials)
    start, end = now // 10**9 - 600, now // 10**9 + 600
    for build in DASHBOARDS.values():
        dashboard = build()
        for panel in dashboard["panels"]:
            sql = expand(panel["targets"][0]["rawSql"], embedded_store.database, start, end, services)
            rows = embedded_store.query_df(sql)
            assert rows.height > 0, panel["title"]
        totals = embedded_store.query_df(
            expand(
                dashboard["panels"][0]["targets"][0]["rawSql"], embedded_store.database, start, end, services
            )
        )
        assert round(totals["rps"].sum() * 10) == 2_000  # every request, per 10 s interval
        variable = dashboard["templating"]["list"][1]["query"]
        assert embedded_store.query_rows(expand(variable, embedded_store.database, start, end, None)) == [
            ("reviews.default.svc.cluster.local",)
        ]
