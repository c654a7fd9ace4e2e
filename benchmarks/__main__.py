"""``python -m benchmarks``: run every benchmark and print figures beside baselines."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from functools import partial

from benchmarks import accesslog_decode, ads_scale, ca_sign, ingest_e2e, store_insert, wal_append
from benchmarks.harness import print_table


def main() -> int:
    print(
        f"# meshloop benchmarks on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    benchmarks: list[tuple[str, Callable[[], list]]] = [
        ("store_insert", store_insert.run),
        ("accesslog_decode", accesslog_decode.run),
        ("wal_append", wal_append.run),
        ("ca_sign", ca_sign.run),
        ("ads_scale (mesh translated from Istio config)", partial(ads_scale.run, generate=True)),
        ("ingest_e2e", ingest_e2e.run),
    ]
    results = []
    for name, run in benchmarks:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.extend(run())
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
