"""Pure checks of the window tables' DDL: keys, engines, dedup, rollup view, cluster mode."""

from __future__ import annotations

import pytest

from meshloop.store import schema
from meshloop.store.migrations import migrations
from tests.unit.test_schema import columns_of


def test_single_node_window_tables_and_view() -> None:
    seconds, minutes, view = schema.access_log_windows_ddl("db", None, 30)
    for ddl, name in ((seconds, "access_log_windows"), (minutes, "access_log_windows_1m")):
        assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS db.{name}\n")
        assert "ENGINE = SummingMergeTree()" in ddl
        assert "PARTITION BY toDate(Window)" in ddl
        assert "PRIMARY KEY (DestinationService, Window)" in ddl
        assert (
            "ORDER BY (DestinationService, Window, ReporterNamespace, ReporterWorkload, "
            "SourceNamespace, SourceWorkload, DestinationSubset, UpstreamCluster, "
            "ResponseClass, HasResponseFlags)" in ddl
        )
        assert "TTL Window + toIntervalDay(30)" in ddl
        # both: a replay dropped by the 1 s table still reaches the view (ClickHouse 26)
        assert "non_replicated_deduplication_window = 10000" in ddl
        cols = dict(columns_of(ddl))
        assert cols["Window"] == "DateTime"
        assert cols["ResponseClass"] == "UInt8" and cols["HasResponseFlags"] == "Bool"
        assert [c for c in cols if c.startswith("B") and c[1:].isdigit()] == list(
            schema.LATENCY_BUCKET_COLUMNS
        )
        assert cols["LatencyBuckets"] == "Array(UInt64)"
    assert "TO db.access_log_windows_1m\n" in view
    assert "FROM db.access_log_windows\n" in view
    assert "toStartOfMinute(Window) AS Window" in view
    assert "sum(B69) AS B69" in view


def test_cluster_window_tables_are_replicated_distributed_and_the_view_is_local() -> None:
    statements = schema.access_log_windows_ddl("meshdb", "prod", 14)
    assert len(statements) == 5 and all(" ON CLUSTER prod" in s.splitlines()[0] for s in statements)
    local_1s, dist_1s, local_1m, dist_1m, view = statements
    assert (
        "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/meshdb/"
        "access_log_windows_local', '{replica}')" in local_1s
    )
    assert "ReplicatedSummingMergeTree(" in local_1m
    for local in (local_1s, local_1m):
        assert "replicated_deduplication_window = 10000" in local
        assert "non_replicated" not in local
    assert dist_1s.endswith(
        "Distributed('prod', 'meshdb', 'access_log_windows_local', "
        "cityHash64(DestinationService, SourceWorkload, ReporterWorkload))"
    )
    assert "AS meshdb.access_log_windows_1m_local" in dist_1m
    assert "TO meshdb.access_log_windows_1m_local\n" in view
    assert "FROM meshdb.access_log_windows_local\n" in view


def test_migration_4_is_the_window_tables() -> None:
    (found,) = [m for m in migrations("db", None, 30) if m.version == 4]
    assert found.name == "access log windows"
    assert found.statements == tuple(schema.access_log_windows_ddl("db", None, 30))


def test_bucket_bounds_and_columns() -> None:
    bounds = schema.LATENCY_BOUNDS_US
    assert bounds[0] == 500 and bounds[-1] == 65_536_000 and len(bounds) == 69
    assert list(bounds) == sorted(set(bounds))
    assert schema.LATENCY_BUCKET_COLUMNS[-1] == "B69"


@pytest.mark.parametrize("q", [-0.1, 1.01])
def test_quantile_sql_rejects_bad_quantiles(q: float) -> None:
    with pytest.raises(ValueError, match="within"):
        schema.latency_quantile_sql(q)
