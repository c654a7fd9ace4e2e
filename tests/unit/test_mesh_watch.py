"""The file watcher (real files, polling to a deadline) and MeshState (pure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from meshloop.mesh import MeshConfig, ValidationIssue, load
from meshloop.mesh.watch import Accepted, MeshState, Rejected, watch

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
BROKEN_VS = (
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n"
    "spec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: nowhere}}]\n"
)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


Call = tuple[MeshConfig | None, list[ValidationIssue]]


@pytest.fixture
def calls() -> list[Call]:
    return []


def recorder(calls: list[Call]) -> Callable[[MeshConfig | None, list[ValidationIssue]], None]:
    def on_change(config: MeshConfig | None, issues: list[ValidationIssue]) -> None:
        calls.append((config, issues))

    return on_change


async def test_a_burst_of_writes_is_one_reload(tmp_path: Path, calls: list[Call]) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text(SERVICE.format(name="a", port=80))
    task = asyncio.create_task(watch([tmp_path], recorder(calls), debounce_s=0.25, poll_s=0.02))
    try:
        await until(lambda: len(calls) == 1)
        for i in range(5):  # a burst: each write lands inside the quiet period of the previous one
            f.write_text(SERVICE.format(name=f"b{i}", port=8000 + i * 111))
            await asyncio.sleep(0.03)
        await until(lambda: len(calls) == 2)
        config = calls[1][0]
        assert config is not None and [s.name for s in config.services] == ["b4"]
        quiet_until = time.monotonic() + 0.5
        while time.monotonic() < quiet_until:  # nothing more arrives without further writes
            assert len(calls) == 2
            await asyncio.sleep(0.02)
    finally:
        task.cancel()


async def test_max_wait_bounds_the_delay_of_continuous_writes(tmp_path: Path, calls: list[Call]) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text(SERVICE.format(name="a", port=80))
    task = asyncio.create_task(watch([f], recorder(calls), debounce_s=0.2, max_wait_s=0.3, poll_s=0.02))
    try:
        await until(lambda: len(calls) == 1)
        deadline = time.monotonic() + 3.0
        i = 0
        while len(calls) < 2:  # keep writing faster than the debounce; max_wait must still fire
            assert time.monotonic() < deadline
            i += 1
            f.write_text(SERVICE.format(name="a", port=1000 + i))
            await asyncio.sleep(0.05)
    finally:
        task.cancel()


async def test_invalid_change_is_rejected_and_last_good_kept(tmp_path: Path) -> None:
    state = MeshState()
    results: list[Accepted | Rejected] = []

    def on_change(config: MeshConfig | None, issues: list[ValidationIssue]) -> None:
        results.append(state.apply(config, issues))

    good = tmp_path / "svc.yaml"
    good.write_text(SERVICE.format(name="a", port=80))
    task = asyncio.create_task(watch([tmp_path], on_change, debounce_s=0.05, poll_s=0.02))
    try:
        await until(lambda: len(results) == 1)
        assert isinstance(results[0], Accepted)
        good_version = results[0].version
        (tmp_path / "vs.yaml").write_text(BROKEN_VS)
        await until(lambda: len(results) == 2)
        rejected = results[1]
        assert isinstance(rejected, Rejected)
        assert rejected.reasons == (
            f"{tmp_path / 'vs.yaml'}:7: VirtualService/default/v: spec.http[0].route[0].destination.host: "
            'unknown host "nowhere.default.svc.cluster.local": no Service or ServiceEntry defines it',
        )
        assert state.config is not None and state.config.version == good_version
        assert state.status()["last_rejection"]["reasons"] == list(rejected.reasons)
        (tmp_path / "vs.yaml").unlink()  # fixing it makes the next load good again
        await until(lambda: len(results) == 3)
        assert isinstance(results[2], Accepted) and results[2].changed is False
    finally:
        task.cancel()


async def test_watched_directory_disappearing_is_a_rejection_not_a_crash(
    tmp_path: Path, calls: list[Call]
) -> None:
    d = tmp_path / "mesh"
    d.mkdir()
    (d / "s.yaml").write_text(SERVICE.format(name="a", port=80))
    task = asyncio.create_task(watch([d], recorder(calls), debounce_s=0.05, poll_s=0.02))
    try:
        await until(lambda: len(calls) == 1)
        (d / "s.yaml").unlink()
        d.rmdir()
        await until(lambda: len(calls) == 2)
        assert calls[1][0] is None
        assert [i.render() for i in calls[1][1]] == [f"{d}:0: no such file or directory"]
        assert not task.done()
    finally:
        task.cancel()


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_mesh_state_transitions_and_metrics(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    state = MeshState(clock=lambda: now[0])
    (tmp_path / "s.yaml").write_text(
        SERVICE.format(name="a", port=80) + "---\n" + SERVICE.format(name="b", port=81)
    )
    config, issues = load([tmp_path])
    applied, rejected = (
        metric("meshloop_mesh_config_applied_total"),
        metric("meshloop_mesh_config_rejected_total"),
    )
    assert state.status() == {
        "version": None,
        "last_applied": None,
        "resources": {},
        "warnings": [],
        "last_rejection": None,
    }

    first = state.apply(config, issues)
    assert first == Accepted(config.version, changed=True)
    assert metric("meshloop_mesh_config_resources", {"kind": "Service"}) == 2
    assert metric("meshloop_mesh_config_applied_total") == applied + 1

    now[0] += 60
    error = ValidationIssue("x.yaml", 3, "Service", "default", "c", "spec", "bad")
    warning = ValidationIssue("x.yaml", 4, "Service", "default", "c", "spec", "meh", "warning")
    assert state.apply(config, [error, warning]) == Rejected(("x.yaml:3: Service/default/c: spec: bad",))
    assert state.apply(None, []) == Rejected(("no config could be loaded",))
    assert metric("meshloop_mesh_config_rejected_total") == rejected + 2
    assert state.config is config

    again = state.apply(config, [warning])
    assert again == Accepted(config.version, changed=False, warnings=(warning,))
    status = state.status()
    assert status["version"] == config.version
    assert status["last_applied"] == "2023-11-14T22:14:20+00:00"
    assert status["resources"]["Service"] == 2
    assert status["warnings"] == ["x.yaml:4: Service/default/c: spec: meh"]
    assert status["last_rejection"] == {
        "at": "2023-11-14T22:14:20+00:00",
        "reasons": ["no config could be loaded"],
    }
