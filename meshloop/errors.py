"""One error hierarchy for meshloop.

Every error a user can see derives from :class:`MeshloopError` and says what was
wrong, where, and (when it helps) what to do. Driver errors are translated with
``raise ... from`` so the original stays attached for debugging.
"""

from __future__ import annotations


class MeshloopError(Exception):
    """Base of every error meshloop raises on purpose."""


class ConfigError(MeshloopError):
    """A setting is malformed, unknown or out of range.

    ``source`` names where the setting came from (a file path, ``environment``
    or ``command line``) and ``key`` the setting's name.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class StoreError(MeshloopError):
    """A ClickHouse statement failed.

    ``code`` is ClickHouse's numeric exception code when known (e.g. 62 for a
    syntax error, 60 for an unknown table), ``None`` when the failure happened
    before ClickHouse answered (connection refused, timeout).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class StoreUnavailable(StoreError):
    """The ClickHouse server could not be reached."""


class SchemaTooNew(MeshloopError):
    """The database was migrated by a newer meshloop than this one."""


class DataDirLocked(MeshloopError):
    """Another running meshloop owns the data directory."""

    def __init__(self, data_dir: str, pid: int) -> None:
        self.pid = pid
        super().__init__(
            f"data dir {data_dir} is owned by a running meshloop (PID {pid}); "
            "stop it first or choose another --data-dir"
        )
