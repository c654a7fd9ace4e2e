"""``meshloop up`` runs polars on one thread unless the environment says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import meshloop.runtime
from meshloop import cli


def _polars_threads_seen_by_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str | None:
    seen: dict[str, str | None] = {}

    async def fake_run(settings: object) -> int:
        seen["threads"] = os.environ.get("POLARS_MAX_THREADS")
        return 0

    monkeypatch.setattr(meshloop.runtime, "run", fake_run)
    args = cli.build_parser().parse_args(["up", "--data-dir", str(tmp_path)])
    assert cli.cmd_up(args) == 0
    return seen["threads"]


def test_up_defaults_polars_to_one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    assert _polars_threads_seen_by_run(monkeypatch, tmp_path) == cli.POLARS_THREADS_DEFAULT == "1"


def test_up_keeps_polars_threads_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLARS_MAX_THREADS", "4")
    assert _polars_threads_seen_by_run(monkeypatch, tmp_path) == "4"
