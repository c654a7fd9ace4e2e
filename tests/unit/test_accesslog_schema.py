"""The polars schema of access_logs frames agrees with the ClickHouse DDL."""

from __future__ import annotations

import polars as pl
import pytest

from meshloop.accesslog.schema import ACCESS_LOG_SCHEMA, SchemaMismatch, check_frame
from meshloop.store.schema import ACCESS_LOG_COLUMNS

# Written out independently of schema.py's own table.
EXPECTED = {
    "DateTime64(9)": pl.Datetime("ns"),
    "LowCardinality(String)": pl.String(),
    "String": pl.String(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Nullable(UInt64)": pl.UInt64(),
    "Array(LowCardinality(String))": pl.List(pl.String()),
}


def test_schema_matches_clickhouse_columns_name_by_name_and_type_by_type():
    assert list(ACCESS_LOG_SCHEMA) == [name for name, _, _ in ACCESS_LOG_COLUMNS]
    for (name, clickhouse_type, _), (polars_name, dtype) in zip(
        ACCESS_LOG_COLUMNS, ACCESS_LOG_SCHEMA.items(), strict=True
    ):
        assert polars_name == name
        assert dtype == EXPECTED[clickhouse_type], name


def test_check_frame_accepts_an_empty_frame_of_the_schema():
    assert check_frame(ACCESS_LOG_SCHEMA.to_frame()).height == 0


def test_check_frame_names_a_wrong_dtype_and_a_missing_column():
    frame = ACCESS_LOG_SCHEMA.to_frame().with_columns(pl.col("ResponseCode").cast(pl.Int64))
    with pytest.raises(SchemaMismatch, match="ResponseCode is Int64"):
        check_frame(frame)
    with pytest.raises(SchemaMismatch, match="missing column BatchId"):
        check_frame(ACCESS_LOG_SCHEMA.to_frame().drop("BatchId"))


def test_check_frame_rejects_nulls_outside_nullable_columns():
    row = {name: None for name in ACCESS_LOG_SCHEMA}
    frame = pl.DataFrame([row], schema=ACCESS_LOG_SCHEMA)
    with pytest.raises(SchemaMismatch, match="nulls in non-nullable columns"):
        check_frame(frame)
