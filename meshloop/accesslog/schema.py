"""The polars schema of ``access_logs`` frames, derived from the ClickHouse DDL.

:data:`ACCESS_LOG_SCHEMA` is built from :data:`meshloop.store.schema.ACCESS_LOG_COLUMNS`
so the two cannot drift: every ClickHouse type used there maps to one polars dtype here,
and an unknown ClickHouse type fails at import time.
"""

from __future__ import annotations

import polars as pl

from meshloop.store.schema import ACCESS_LOG_COLUMNS

# ClickHouse type → polars dtype. LowCardinality(String) is a plain pl.String: the
# dictionary encoding happens in ClickHouse on insert; Categorical would only add a
# global string cache on our side and slow the string expressions of the decoder.
_CLICKHOUSE_TO_POLARS: dict[str, pl.DataType] = {
    "DateTime64(9)": pl.Datetime("ns"),
    "String": pl.String(),
    "LowCardinality(String)": pl.String(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Nullable(UInt64)": pl.UInt64(),
    "Array(LowCardinality(String))": pl.List(pl.String()),
}


def polars_dtype(clickhouse_type: str) -> pl.DataType:
    """The polars dtype that holds values of ``clickhouse_type`` (``Nullable`` = nulls allowed)."""
    try:
        return _CLICKHOUSE_TO_POLARS[clickhouse_type]
    except KeyError:
        raise ValueError(f"no polars dtype for ClickHouse type {clickhouse_type!r}") from None


ACCESS_LOG_SCHEMA: pl.Schema = pl.Schema(
    [(name, polars_dtype(type_)) for name, type_, _codec in ACCESS_LOG_COLUMNS]
)
"""Column names and dtypes of every ``access_logs`` frame, in table order."""

NULLABLE_COLUMNS: frozenset[str] = frozenset(
    name for name, type_, _codec in ACCESS_LOG_COLUMNS if type_.startswith("Nullable(")
)
"""Columns that may hold nulls; every other column must be null-free."""


class SchemaMismatch(ValueError):
    """A frame does not have the ``access_logs`` columns, dtypes or null rules."""


def check_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Return ``df`` unchanged if it matches :data:`ACCESS_LOG_SCHEMA`, else raise.

    Checks names and order, dtypes, and that only :data:`NULLABLE_COLUMNS` hold nulls
    (ClickHouse would reject or silently default a null in a non-Nullable column).
    """
    if df.schema != ACCESS_LOG_SCHEMA:
        problems = []
        got = df.schema
        for name, dtype in ACCESS_LOG_SCHEMA.items():
            if name not in got:
                problems.append(f"missing column {name} ({dtype})")
            elif got[name] != dtype:
                problems.append(f"column {name} is {got[name]}, expected {dtype}")
        problems += [f"unexpected column {name}" for name in got if name not in ACCESS_LOG_SCHEMA]
        if not problems:
            problems.append(f"columns out of order: {list(got)}")
        raise SchemaMismatch("access_logs frame: " + "; ".join(problems))
    nulls = df.null_count().row(0, named=True)
    bad = [name for name, count in nulls.items() if count and name not in NULLABLE_COLUMNS]
    if bad:
        raise SchemaMismatch(f"access_logs frame: nulls in non-nullable columns {bad}")
    return df
