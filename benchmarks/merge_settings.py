"""ClickHouse merge settings at a steady 100k entries/s (not in ``make bench``).

For each variant a fresh ``meshloop up`` gets ``ALTER TABLE … MODIFY SETTING`` on its
access-log and window tables, then 1.5M entries at 100k/s (as ``ingest_e2e``'s steady
run). Printed: meshloop CPU, the merge threads' CPU, ClickHouse's ``MergedRows``
counter and the active ``access_logs`` parts left at the end (merge debt).

Run: ``.venv/bin/python -m benchmarks.merge_settings [variant ...]``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ingest_e2e as e2e
from tests.integration.meshloop_process import MeshloopProcess, poll

ENTRIES = 1_500_000
RATE = 100_000
VARIANTS = {
    "as shipped": "",
    "no automatic statistics": "auto_statistics_types = ''",
    "min 10 parts per merge": "min_parts_to_merge_at_once = 10",
    "no merge-width heuristic": "merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0",
    "merge_selector_base 10": "merge_selector_base = 10",
}
TABLES = ("access_logs", "access_log_windows", "access_log_windows_1m")


def measure(name: str, setting: str, payloads: list[bytes]) -> None:
    with MeshloopProcess(Path(tempfile.mkdtemp()) / "data", extra=["--window-lateness", "120"]) as meshloop:
        meshloop.wait_ready(120)
        for table in TABLES if setting else ():
            meshloop.query(f"ALTER TABLE meshloop.{table} MODIFY SETTING {setting}")
        pid = meshloop.proc.pid  # type: ignore[union-attr]
        threads_before, cpu_before = e2e._thread_cpu(pid), e2e._cpu_seconds(pid)
        streams = e2e._streams(payloads, ENTRIES // 100)
        e2e.send_streams(meshloop.collector_port, streams, RATE / 100 / e2e.STREAMS)
        poll(lambda: e2e._stored(meshloop) >= ENTRIES, 600, "all rows", 0.1)
        threads_after, cpu = e2e._thread_cpu(pid), e2e._cpu_seconds(pid) - cpu_before
        merges = threads_after.get("MergeMutate", 0.0) - threads_before.get("MergeMutate", 0.0)
        merged = meshloop.query("SELECT value FROM system.events WHERE event = 'MergedRows' FORMAT TSV")
        parts = meshloop.query(
            "SELECT count() FROM system.parts WHERE database = 'meshloop' AND table = 'access_logs' "
            "AND active FORMAT TSV"
        )
    print(
        f"{name:26s} CPU {cpu:5.1f} s  merges {merges:4.1f} s  MergedRows {int(merged.strip() or 0):>10,}  "
        f"parts {parts.strip()}",
        flush=True,
    )


def main(names: list[str]) -> None:
    payloads = e2e.sample_payloads(
        entries=e2e.UNIQUE_ENTRIES, start_ns=time.time_ns(), spacing_ns=e2e.SPACING_NS
    )
    for name, setting in VARIANTS.items():
        if not names or name in names:
            measure(name, setting, payloads)


if __name__ == "__main__":
    main(sys.argv[1:])
