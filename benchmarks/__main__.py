"""``python -m benchmarks``: run every benchmark and print figures beside baselines."""

from __future__ import annotations

import os
import platform
import sys

from benchmarks import accesslog_decode, ads_scale, ca_sign, ingest_e2e, store_insert, wal_append
from benchmarks.harness import print_table


def main() -> int:
    print(
        f"# meshloop benchmarks on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    results = []
    for module in (store_insert, accesslog_decode, wal_append, ca_sign, ads_scale, ingest_e2e):
        print(f"running {module.__name__} ...", file=sys.stderr, flush=True)
        results.extend(module.run())
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
