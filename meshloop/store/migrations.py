"""Versioned, idempotent schema migrations, recorded in ``<database>.schema_migrations``.

A migration is a numbered list of DDL statements, each safe to run twice
(``IF NOT EXISTS``), so a crash between a statement and its record only means the next run
repeats harmless statements. :func:`migrate` applies what the database lacks, in order,
and refuses a database migrated by a newer meshloop (:class:`~meshloop.errors.SchemaTooNew`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from meshloop.errors import SchemaTooNew
from meshloop.store import schema, schema_control, schema_otel
from meshloop.store.base import Store


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` (strictly increasing), a short ``name``, its DDL."""

    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """SHA-256 of the statements as rendered (so it depends on cluster and TTL)."""
        digest = hashlib.sha256()
        for statement in self.statements:
            digest.update(statement.encode())
            digest.update(b"\0")
        return digest.hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did.

    ``version`` is the schema version the database is at now, ``previous_version`` the one
    it was at before (0 = new), ``applied`` the versions applied by this run, in order.
    """

    database: str
    previous_version: int
    version: int
    applied: tuple[int, ...]


def migrations(database: str, cluster: str | None = None, ttl_days: int = 30) -> list[Migration]:
    """Every migration this meshloop knows, oldest first."""
    found = [
        Migration(1, "access logs", tuple(schema.access_logs_ddl(database, cluster, ttl_days))),
        Migration(
            2,
            "otel tables",
            tuple(
                schema_otel.otel_logs_ddl(database, cluster, ttl_days)
                + schema_otel.otel_traces_ddl(database, cluster, ttl_days)
            ),
        ),
        Migration(3, "otel metrics", tuple(schema_otel.otel_metrics_ddl(database, cluster, ttl_days))),
        Migration(
            4,
            "access log windows",
            tuple(schema.access_log_windows_ddl(database, cluster, ttl_days)),
        ),
        Migration(5, "xds events", tuple(schema_control.xds_events_ddl(database, cluster, ttl_days))),
        Migration(6, "mesh changes", tuple(schema_control.mesh_changes_ddl(database, cluster, ttl_days))),
    ]
    versions = [m.version for m in found]
    assert versions == sorted(set(versions)), "migration versions must strictly increase"
    return found


def _bootstrap(database: str, cluster: str | None) -> list[str]:
    return [schema.create_database_sql(database, cluster)] + schema.schema_migrations_ddl(
        database, cluster
    )


def render_cluster_sql(database: str, cluster: str | None, ttl_days: int = 30) -> str:
    """The full SQL a cluster (or, with ``cluster=None``, a single server) receives from
    :func:`migrate` on an empty database.

    For an operator who applies the schema by hand (``clickhouse-client --multiquery``)
    and for review; the records in ``schema_migrations`` are left to :func:`migrate`.
    """
    parts = ["-- meshloop schema: bootstrap"] + [s + ";" for s in _bootstrap(database, cluster)]
    for migration in migrations(database, cluster, ttl_days):
        parts.append(f"-- migration {migration.version}: {migration.name}")
        parts += [s + ";" for s in migration.statements]
    return "\n\n".join(parts) + "\n"


def applied_versions(store: Store) -> list[int]:
    """Versions recorded in ``schema_migrations`` (which must exist), ascending."""
    rows = store.query_rows(
        f"SELECT DISTINCT version FROM {store.database}.{schema.SCHEMA_MIGRATIONS} "
        "ORDER BY version"
    )
    return [int(row[0]) for row in rows]


def migrate(
    store: Store,
    cluster: str | None = None,
    ttl_days: int = 30,
    progress: Callable[[str], None] | None = None,
) -> MigrationReport:
    """Bring ``store.database`` to the newest schema; return what was applied.

    Creates the database and ``schema_migrations`` if missing, then applies each
    unrecorded migration in version order and records it. Running it again applies
    nothing. Raises :class:`SchemaTooNew` when the database records a version this code
    does not know (a newer meshloop migrated it): downgrading would misread its tables.
    """
    database = store.database
    for statement in _bootstrap(database, cluster):
        store.command(statement)
    known = migrations(database, cluster, ttl_days)
    newest_known = known[-1].version
    done = set(applied_versions(store))
    previous = max(done, default=0)
    if previous > newest_known:
        raise SchemaTooNew(
            f"database {database} is at schema version {previous} but this meshloop knows "
            f"only up to {newest_known}; upgrade meshloop"
        )
    applied: list[int] = []
    for migration in known:
        if migration.version in done:
            continue
        if progress is not None:
            progress(f"applying migration {migration.version} ({migration.name})")
        for statement in migration.statements:
            store.command(statement)
        _record(store, migration)
        applied.append(migration.version)
    current = max(done | set(applied), default=0)
    return MigrationReport(database, previous, current, tuple(applied))


def _record(store: Store, migration: Migration) -> None:
    store.command(
        f"INSERT INTO {store.database}.{schema.SCHEMA_MIGRATIONS} "
        "(version, name, checksum, applied_at) "
        "SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3)",
        {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
    )
