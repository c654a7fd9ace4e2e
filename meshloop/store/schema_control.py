"""DDL of the control plane's own tables (xDS events; later: controller decisions).

Same rendering as the telemetry tables (:mod:`meshloop.store.schema`): single node, or
``_local`` Replicated tables plus a Distributed table on a cluster.
"""

from __future__ import annotations

from meshloop.store.schema import Target, _lines, _render, _Table

XDS_EVENTS = "xds_events"


def xds_events_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """``xds_events``: every ADS connect, disconnect, ACK and NACK, per proxy and type.

    Columns follow :data:`meshloop.xds.status.EVENT_SCHEMA`. Ordered by proxy then time:
    "what happened to proxy X" is the question (``meshloop proxy-status`` history, NACK
    investigations).
    """
    columns = [
        "time DateTime64(6, 'UTC') CODEC(Delta(8), ZSTD(1))",
        "node_id LowCardinality(String) CODEC(ZSTD(1))",
        "type_url LowCardinality(String) CODEC(ZSTD(1))",
        "version String CODEC(ZSTD(1))",
        "kind LowCardinality(String) CODEC(ZSTD(1))",
        "message String CODEC(ZSTD(1))",
        "INDEX idx_kind kind TYPE set(8) GRANULARITY 1",
    ]
    table = _Table(
        name=XDS_EVENTS,
        body=_lines(columns),
        order_by="(node_id, time)",
        partition_by="toDate(time)",
        ttl_time="toDateTime(time)",
        sharding_key="cityHash64(node_id)",
        dedup=False,
    )
    return _render(table, Target(database, cluster, ttl_days))


MESH_CHANGES = "mesh_changes"


def mesh_changes_ddl(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[str]:
    """``mesh_changes``: every accepted or rejected mesh config and every override set or
    removed — what changed the mesh, when, by whom, and why it was refused."""
    columns = [
        "time DateTime64(6, 'UTC') CODEC(Delta(8), ZSTD(1))",
        "kind LowCardinality(String) CODEC(ZSTD(1))",  # config | route_weights | circuit_breaker | ...
        "action LowCardinality(String) CODEC(ZSTD(1))",  # accepted | rejected | set | removed
        "target String CODEC(ZSTD(1))",  # config version, or the host / policy the override names
        "actor LowCardinality(String) CODEC(ZSTD(1))",  # mesh-dir, api, or a controller's name
        "detail String CODEC(ZSTD(1))",  # JSON: the override, or the rejection reasons
    ]
    table = _Table(
        name=MESH_CHANGES,
        body=_lines(columns),
        order_by="(kind, time)",
        partition_by="toYYYYMM(time)",
        ttl_time="toDateTime(time)",
        sharding_key="rand()",
        dedup=False,
    )
    return _render(table, Target(database, cluster, ttl_days))
