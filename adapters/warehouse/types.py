"""The Arrow / DuckDB equivalents of BigQuery's types (the vocabulary itself: `values.tables`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

DUCKDB_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "NUMERIC": "DECIMAL(38,9)",
    "BIGNUMERIC": "VARCHAR",  # DuckDB decimals stop at 38 digits; BIGNUMERIC keeps full precision as text
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "DATETIME": "TIMESTAMP",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
    "BYTES": "BLOB",
}


def arrow_type(bq_type: str, mode: str = "NULLABLE") -> pa.DataType:
    """The Arrow type a validated column of this BigQuery type is staged as."""
    import pyarrow as pa

    base = {
        "STRING": pa.string(),
        "INT64": pa.int64(),
        "NUMERIC": pa.decimal128(38, 9),
        "BIGNUMERIC": pa.string(),
        "FLOAT64": pa.float64(),
        "BOOL": pa.bool_(),
        "DATE": pa.date32(),
        "DATETIME": pa.timestamp("us"),
        "TIME": pa.time64("us"),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
        "JSON": pa.string(),
        "BYTES": pa.binary(),
    }[bq_type]
    return pa.list_(base) if mode == "REPEATED" else base


def duckdb_type(bq_type: str, mode: str = "NULLABLE") -> str:
    base = DUCKDB_TYPES[bq_type]
    return f"{base}[]" if mode == "REPEATED" else base
