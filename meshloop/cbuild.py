"""Building meshloop's small C libraries with the system C compiler.

Each library is one C source next to the Python module that loads it through ctypes:
:mod:`meshloop.accesslog.native` (the access-log reader) and
:mod:`meshloop.store.native_format` (ClickHouse Native strings). ``make`` builds them;
a module also builds its library on first use when it is missing or older than its
source. The compiler is ``$CC`` (default ``cc``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


class CBuildError(RuntimeError):
    """The C compiler could not be run, or the source did not compile."""


def compile_shared(source: Path, target: Path, flags: Sequence[str] = ("-O3",)) -> Path:
    """Compile ``source`` into the shared library ``target`` (atomically); return it."""
    compiler = os.environ.get("CC", "cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{source.stem}-", suffix=".so")
    os.close(fd)
    command = [compiler, *flags, "-fPIC", "-shared", "-Wall", "-o", tmp, str(source)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        os.unlink(tmp)
        raise CBuildError(f"cannot run the C compiler {compiler!r}: {exc}") from None
    if done.returncode != 0:
        os.unlink(tmp)
        raise CBuildError(f"building {source.name} failed: {done.stderr.strip()[:2000]}")
    os.replace(tmp, target)
    return target


def is_stale(source: Path, library: Path) -> bool:
    """True when ``library`` is missing or older than ``source``."""
    return not library.exists() or library.stat().st_mtime < source.stat().st_mtime


def library_path(override_env: str, source: Path, library: Path, build: Callable[[], Path]) -> Path:
    """The library to load: the one ``$override_env`` names if set (a sanitizer build),
    else ``library``, built first when it is missing or older than ``source``."""
    override = os.environ.get(override_env)
    if override:
        return Path(override)
    return build() if is_stale(source, library) else library


def build_command(build: Callable[[], Path], unavailable: type[Exception]) -> int:
    """What ``python -m <module>`` runs for a module with a C library (``make`` does):
    build it, print where; on ``unavailable``, one line and exit status 2."""
    try:
        print(f"built {build()}")
    except unavailable as exc:
        print(f"error: {exc} (a C compiler is needed: set CC, or install one, e.g. apt-get install gcc)",
              file=sys.stderr)
        return 2
    return 0
