"""The embedded ClickHouse starts with meshloop's engine settings: merges at low priority."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshloop.errors import StoreError
from meshloop.store.embedded import ENGINE_SETTINGS, EmbeddedStore, engine_address
from tests.integration.meshloop_process import poll

pytestmark = pytest.mark.integration


def _nice_values(thread_name: str) -> list[int]:
    """The nice value of each thread of this process named ``thread_name``."""
    values = []
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        if stat[stat.index("(") + 1 : stat.rindex(")")] == thread_name:
            values.append(int(stat.rsplit(")", 1)[1].split()[16]))  # field 19: nice
    return values


def test_engine_reports_the_settings_it_started_with(embedded_store: EmbeddedStore) -> None:
    for name, value in ENGINE_SETTINGS.items():
        sql = "SELECT value FROM system.server_settings WHERE name = {name:String}"
        assert embedded_store.execute(sql, params={"name": name}).decode().strip() == value


def test_background_merges_run_at_the_lowest_cpu_priority(embedded_store: EmbeddedStore) -> None:
    table = f"{embedded_store.database}.merged"
    embedded_store.command(f"CREATE TABLE {table} (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
    embedded_store.command(f"SYSTEM STOP MERGES {table}")
    for part in range(6):
        embedded_store.command(
            f"INSERT INTO {table} SELECT number * 6 + {part}, toString(rand64()) FROM numbers(300000)"
        )
    parts = (
        "SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'merged' AND active"
    )
    niceness_while_merging: set[int] = set()

    def merged() -> bool:
        niceness_while_merging.update(_nice_values("MergeMutate"))
        return embedded_store.execute(parts, params={"db": embedded_store.database}).strip() == b"1"

    embedded_store.command(f"SYSTEM START MERGES {table}")  # a background merge, not OPTIMIZE's
    poll(merged, 60, "a background merge of 6 parts", 0.001)
    assert int(embedded_store.execute(f"SELECT count() FROM {table}")) == 1_800_000
    assert 19 in niceness_while_merging, niceness_while_merging


def test_a_path_with_a_question_mark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot contain"):
        engine_address(tmp_path / "data?x=1")
    assert engine_address(Path("/data")) == "/data?os_threads_nice_value_merge_mutate=19"
    with pytest.raises(StoreError, match="cannot contain"):
        EmbeddedStore(tmp_path / "what?")
    assert not (tmp_path / "what?").exists()
