"""XdsStatus.prune: proxies gone for long enough are forgotten, connected ones never."""

from __future__ import annotations

from meshloop.xds.status import XdsStatus


def test_prune_forgets_only_proxies_gone_long_enough() -> None:
    now = [1000.0]
    status = XdsStatus(clock=lambda: now[0])
    for node in ("a", "b", "c"):
        status.connected(node)
    status.disconnected("a")  # gone at t=1000
    now[0] = 1300.0
    status.disconnected("b")  # gone at t=1300
    status.connected("c")  # c has two streams
    status.disconnected("c")  # still one open
    now[0] = 1599.0
    assert status.prune(gone_for_s=600) == []
    now[0] = 1600.0
    assert status.prune(gone_for_s=600) == ["a"]
    assert [p["node_id"] for p in status.status()] == ["b", "c"]
    now[0] = 1300.0 + 600
    assert status.prune(gone_for_s=600) == ["b"]
    now[0] = 10_000.0
    assert status.prune(gone_for_s=600) == []  # c is connected
    assert [p["node_id"] for p in status.status()] == ["c"]


def test_a_reconnected_proxy_is_not_pruned() -> None:
    now = [0.0]
    status = XdsStatus(clock=lambda: now[0])
    status.connected("a")
    status.disconnected("a")
    now[0] = 500.0
    status.connected("a")
    now[0] = 5_000.0
    assert status.prune(gone_for_s=600) == []
