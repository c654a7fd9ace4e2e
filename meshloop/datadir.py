"""The data directory: one running meshloop owns it, recorded in a locked PID file.

The lock is an ``fcntl`` advisory lock on ``meshloop.pid``; the kernel drops it when
the process dies, so a crash never leaves a stale lock behind. ``endpoints.json``
beside it tells other commands (``meshloop query``) where the running process listens.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from meshloop.errors import DataDirLocked

PID_FILE = "meshloop.pid"
ENDPOINTS_FILE = "endpoints.json"


class DataDirLock:
    """Exclusive ownership of a data directory for the life of this process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirLocked` naming the owner's PID."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / PID_FILE
        handle = open(path, "a+")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise DataDirLocked(str(self.data_dir), int(owner) if owner.isdigit() else -1) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Drop the lock and remove the endpoints file."""
        if self._file is None:
            return
        (self.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def write_endpoints(data_dir: Path, endpoints: dict[str, Any]) -> None:
    """Record where the running process listens (atomically replaced)."""
    tmp = data_dir / (ENDPOINTS_FILE + ".tmp")
    tmp.write_text(json.dumps(endpoints, indent=2) + "\n")
    tmp.replace(data_dir / ENDPOINTS_FILE)


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """Endpoints of the meshloop running on ``data_dir``, or None if none is."""
    try:
        return json.loads((data_dir / ENDPOINTS_FILE).read_text())
    except (OSError, ValueError):
        return None
