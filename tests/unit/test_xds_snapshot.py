"""Snapshots (versions, consistency, delta diffs), the snapshot cache, and proxy status."""

from __future__ import annotations

import asyncio

import polars as pl
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, duration_pb2
from hypothesis import given
from hypothesis import strategies as st

from meshloop.xds.cache import NodeInfo, SnapshotCache
from meshloop.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, short_name
from meshloop.xds.snapshot import InconsistentSnapshot, Snapshot, delta_diff
from meshloop.xds.status import XdsEvent, XdsStatus, events_frame, proxy_status_table, sync_state


def cluster(name: str, eds: bool = True, service: str = "", timeout: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=timeout))
    c.type = cluster_pb2.Cluster.EDS if eds else cluster_pb2.Cluster.STATIC
    if eds:
        c.eds_cluster_config.eds_config.ads.SetInParent()
        c.eds_cluster_config.service_name = service
    return c


def cla(name: str) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name)


def route_config(name: str, *clusters: str) -> route_pb2.RouteConfiguration:
    routes = [
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=f"/{c}"),
            route=route_components_pb2.RouteAction(cluster=c),
        )
        for c in clusters
    ]
    host = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


def listener(name: str, rds: str | None = None, inline: route_pb2.RouteConfiguration | None = None):  # type: ignore[no-untyped-def]
    manager = hcm.HttpConnectionManager(stat_prefix=name)
    if rds is not None:
        manager.rds.route_config_name = rds
        manager.rds.config_source.ads.SetInParent()
    if inline is not None:
        manager.route_config.CopyFrom(inline)
    packed = any_pb2.Any()
    packed.Pack(manager)
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=packed
            )
        ]
    )
    return listener_pb2.Listener(name=name, filter_chains=[chain])


def good() -> Snapshot:
    return Snapshot.build(
        {
            LISTENER: [listener("http", rds="r")],
            ROUTE: [route_config("r", "a", "b")],
            CLUSTER: [cluster("a"), cluster("b", service="b-svc")],
            ENDPOINT: [cla("a"), cla("b-svc")],
        }
    )


# --- snapshot --------------------------------------------------------------------------------


def test_versions_per_type_and_every_type_present() -> None:
    snapshot = good()
    assert set(PUSH_ORDER) <= set(snapshot.versions())
    assert len({snapshot.version(t) for t in PUSH_ORDER}) == len(PUSH_ORDER)  # type URL is in the hash
    assert snapshot.get(CLUSTER).by_name["b"].packed.type_url == CLUSTER
    assert snapshot.consistent() == []


def test_any_is_built_once_and_shared() -> None:
    snapshot = good()
    first = snapshot.get(CLUSTER).select(None)
    second = snapshot.get(CLUSTER).select({"a", "b", "zzz"})
    assert [r.packed for r in first] == [r.packed for r in second]
    assert all(a.packed is b.packed for a, b in zip(first, second, strict=True))
    decoded = cluster_pb2.Cluster()
    first[0].packed.Unpack(decoded)
    assert decoded.name == "a"


def test_change_in_one_type_changes_only_its_version() -> None:
    before = good()
    after = Snapshot.build(
        {
            LISTENER: [listener("http", rds="r")],
            ROUTE: [route_config("r", "a", "b")],
            CLUSTER: [cluster("a", timeout=5), cluster("b", service="b-svc")],
            ENDPOINT: [cla("a"), cla("b-svc")],
        }
    )
    changed = {short_name(t) for t in PUSH_ORDER if before.version(t) != after.version(t)}
    assert changed == {"CDS"}
    assert before.get(CLUSTER).by_name["b"].version == after.get(CLUSTER).by_name["b"].version
    assert before.get(CLUSTER).by_name["a"].version != after.get(CLUSTER).by_name["a"].version


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        ({LISTENER: [listener("l", rds="missing")]}, "route config 'missing', not in RDS"),
        ({CLUSTER: [cluster("a")]}, "needs load assignment 'a'"),
        ({CLUSTER: [cluster("a", service="svc")], ENDPOINT: [cla("a")]}, "needs load assignment 'svc'"),
        ({ROUTE: [route_config("r", "ghost")]}, "sends to cluster 'ghost'"),
        ({LISTENER: [listener("l", inline=route_config("inline", "ghost"))]}, "route config 'inline'"),
    ],
)
def test_consistency_problems_name_the_resource(resources: dict, problem: str) -> None:  # type: ignore[type-arg]
    problems = Snapshot.build(resources).consistent()
    assert len(problems) == 1 and problem in problems[0], problems


def test_static_clusters_count_as_existing() -> None:
    snapshot = Snapshot.build({ROUTE: [route_config("r", "meshloop_collector")]})
    assert snapshot.consistent() and snapshot.consistent(external_clusters={"meshloop_collector"}) == []


@pytest.mark.parametrize(
    "resources",
    [{CLUSTER: [cluster("a", eds=False), cluster("a", eds=False)]}, {CLUSTER: [cla("a")]}],
)
def test_build_refuses_duplicates_and_wrong_types(resources: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(InconsistentSnapshot):
        Snapshot.build(resources)


names = st.lists(st.text("abcdef", min_size=1, max_size=4), unique=True, max_size=8)


@given(names, st.randoms(use_true_random=False), st.integers(1, 30))
def test_version_is_deterministic_regardless_of_order(
    cluster_names: list[str], random: object, timeout: int
) -> None:
    clusters = [cluster(n, eds=False, timeout=timeout) for n in cluster_names]
    shuffled = list(clusters)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = Snapshot.build({CLUSTER: clusters}), Snapshot.build({CLUSTER: shuffled})
    assert a.versions() == b.versions()
    assert [r.name for r in a.get(CLUSTER).select(None)] == sorted(cluster_names)
    if cluster_names:
        other = Snapshot.build({CLUSTER: [cluster(n, eds=False, timeout=timeout + 1) for n in cluster_names]})
        assert other.version(CLUSTER) != a.version(CLUSTER)


@pytest.mark.parametrize(
    ("known", "subscribed", "changed", "removed"),
    [
        ({}, None, ["a", "b"], []),
        ({"a": "stale"}, None, ["a", "b"], []),
        ({"x": "1"}, {"a"}, ["a"], ["x"]),
        ({}, {"a", "ghost"}, ["a"], []),
        ({"ghost": "1"}, {"ghost"}, [], ["ghost"]),
    ],
)
def test_delta_diff(
    known: dict[str, str], subscribed: set[str] | None, changed: list[str], removed: list[str]
) -> None:
    typed = Snapshot.build({CLUSTER: [cluster("a", eds=False), cluster("b", eds=False)]}).get(CLUSTER)
    got_changed, got_removed = delta_diff(known, typed, subscribed)
    assert [r.name for r in got_changed] == changed and got_removed == removed
    current = {r.name: r.version for r in typed.select(None)}
    assert delta_diff(current, typed, None) == ([], [])


# --- cache -----------------------------------------------------------------------------------


def test_inconsistent_snapshot_is_refused_and_previous_kept() -> None:
    cache, node = SnapshotCache(), NodeInfo("n1")
    cache.set_snapshot("n1", good())
    bad = Snapshot.build({ROUTE: [route_config("r", "ghost")]})
    with pytest.raises(InconsistentSnapshot, match="node 'n1'.*ghost"):
        cache.set_snapshot("n1", bad)
    assert cache.snapshot_for(node) == good()


def test_default_snapshot_by_match_and_own_snapshot_wins() -> None:
    cache = SnapshotCache()
    shop = Snapshot.build({CLUSTER: [cluster("shop", eds=False)]})
    cache.set_default("shop", lambda n: n.metadata.get("NAMESPACE") == "shop", shop)
    in_shop, elsewhere = (
        NodeInfo("a", metadata={"NAMESPACE": "shop"}),
        NodeInfo("b", metadata={"NAMESPACE": "x"}),
    )
    assert cache.snapshot_for(in_shop) == shop and cache.snapshot_for(elsewhere) is None
    cache.set_snapshot("a", good())
    assert cache.snapshot_for(in_shop) == good()
    cache.clear_snapshot("a")
    assert cache.snapshot_for(in_shop) == shop


async def test_watch_wakes_on_change_of_type_version() -> None:
    cache, node = SnapshotCache(), NodeInfo("n1")
    first = good()
    cache.set_snapshot("n1", first)
    waiter = asyncio.create_task(cache.wait_for_version(node, CLUSTER, first.version(CLUSTER)))
    await asyncio.sleep(0)
    cache.set_snapshot("n1", first)  # same content: the watcher keeps waiting
    await asyncio.sleep(0)
    assert not waiter.done()
    changed = Snapshot.build({CLUSTER: [cluster("z", eds=False)]})
    cache.set_snapshot("n1", changed)
    assert await asyncio.wait_for(waiter, 2) is changed


async def test_default_change_wakes_watchers_without_own_snapshot() -> None:
    cache, node = SnapshotCache(), NodeInfo("n1", metadata={"NAMESPACE": "shop"})
    watch = cache.watch(node)
    nxt = asyncio.create_task(watch.next())
    cache.set_default("all", lambda n: True, good())
    assert await asyncio.wait_for(nxt, 2) == good()
    watch.close()


# --- status ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_status_states_table_and_events() -> None:
    clock, events = FakeClock(), list[XdsEvent]()
    status = XdsStatus(on_event=events.append, clock=clock, monotonic=clock)
    status.connected("sidecar~1", "app.default", "1.40.0")
    for type_url in (CLUSTER, ENDPOINT, LISTENER):
        status.sent("sidecar~1", type_url, "v1")
    status.acked("sidecar~1", CLUSTER, "v1")
    status.nacked("sidecar~1", LISTENER, "v1", "bad listener")
    rows = status.status()
    assert rows[0]["streams"] == 1 and rows[0]["connected_since"] == clock.now
    types = rows[0]["types"]
    assert [types[t]["state"] for t in ("CDS", "EDS", "LDS")] == [
        "SYNCED",
        "STALE (Never Acknowledged)",
        "NACKed",
    ]
    assert types["LDS"]["nack"] == {"version": "v1", "message": "bad listener", "at": clock.now}
    table = proxy_status_table(rows)
    assert table.splitlines()[0].split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "VERSION"]
    assert "NOT SENT" in table and "1.40.0" in table
    assert [e.kind for e in events] == ["CONNECT", "ACK", "NACK"]
    status.disconnected("sidecar~1")
    assert status.status()[0]["streams"] == 0 and events[-1].kind == "DISCONNECT"


def test_sync_state_after_nack_then_new_push_is_stale_until_ack() -> None:
    entry = {"sent_version": "v2", "acked_version": "v0", "nack": {"version": "v1", "message": "x"}}
    assert sync_state(entry) == "STALE (Never Acknowledged)"
    assert sync_state({**entry, "acked_version": "v2"}) == "SYNCED"
    assert sync_state(None) == "NOT SENT"


def test_events_frame_schema() -> None:
    events = [XdsEvent(1_700_000_000.5, "n1", ROUTE, "v1", "NACK", "weights sum to 0")]
    frame = events_frame(events)
    assert frame.schema["time"] == pl.Datetime("us", "UTC")
    assert frame.row(0, named=True)["message"] == "weights sum to 0"
    assert frame["time"][0].timestamp() == 1_700_000_000.5
    assert events_frame([]).height == 0
