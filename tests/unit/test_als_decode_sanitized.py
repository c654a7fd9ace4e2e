"""The C access-log reader under AddressSanitizer + UBSan, fed mutated payloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshloop.accesslog import native

ROOT = Path(__file__).resolve().parents[2]


def _runtime(name: str) -> str:
    compiler = os.environ.get("CC", "cc")
    found = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True)
    path = found.stdout.strip()
    if not os.path.isabs(path):
        pytest.fail(f"{compiler} has no {name}: the sanitizer runtime is needed for this test")
    return path


SANITIZER_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]


def run_sanitized(
    script: str, args: list[str], library_env: str, library: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with ``library`` (a sanitizer build) loaded through
    ``library_env`` and the sanitizer runtimes preloaded; any report aborts it."""
    env = {
        **os.environ,
        library_env: str(library),
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_mutated_payloads_never_touch_memory_they_should_not(tmp_path: Path):
    library = native.build(tmp_path / "als_asan.so", SANITIZER_FLAGS)
    done = run_sanitized("fuzz_als_decode.py", ["20000", "7"], native.LIBRARY_ENV, library)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "no crash" in done.stdout
    assert "decoded" in done.stdout and " 0 decoded" not in done.stdout  # some inputs got through
