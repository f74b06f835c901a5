"""BigQuery schemas: registered columns and lineage as SchemaFields, new tables, schema drift."""

from __future__ import annotations

from typing import Any

from errors import PermanentError
from values.identifiers import InvalidIdentifier, column_name, dataset_name, table_name
from values.tables import MODES, Column, TableTarget, normalize_type

LINEAGE_TYPES = ("INT64", "INT64", "INT64", "TIMESTAMP")
TIME_PARTITION_TYPES = {"DATE", "TIMESTAMP", "DATETIME"}
CLUSTERABLE = {"BIGNUMERIC", "BOOL", "DATE", "DATETIME", "INT64", "NUMERIC", "STRING", "TIMESTAMP"}
STAGED_AS_STRING = {"JSON", "BIGNUMERIC"}  # Parquet cannot carry these; the pipeline stages text


def schema_fields(target: TableTarget, lineage_columns: tuple[tuple[str, str], ...]) -> list[Any]:
    """Registered columns then lineage columns, every name and type validated."""
    from google.cloud import bigquery

    dataset_name(target.dataset)
    table_name(target.table)
    fields = [field(column_name(c.name), column_type(c), column_mode(c), c.description) for c in target.columns]
    taken = {f.name.lower() for f in fields}
    if len(taken) != len(fields):
        raise InvalidIdentifier(f"{target.dataset}.{target.table} has duplicate column names")
    lineage = [bigquery.SchemaField(n, t) for n, t in lineage_columns]
    clash = taken & {f.name.lower() for f in lineage}
    if clash:
        raise InvalidIdentifier(f"column {sorted(clash)[0]} is reserved for CAF lineage")
    names = {f.name for f in fields}
    for key in target.keys:
        if key not in names:
            raise PermanentError(f"key {key!r} of {target.dataset}.{target.table} is not a column")
    if target.partition_field and target.partition_field not in names:
        raise PermanentError(f"partition field {target.partition_field!r} of "
                             f"{target.dataset}.{target.table} is not a column")
    return fields + lineage


def new_table(table_id: str, target: TableTarget, schema: list[Any], *, file_id_column: str) -> Any:
    """The table resource: DAY-partitioned on a date/time `partition_field`, clustered on up to four keys."""
    from google.cloud import bigquery

    table = bigquery.Table(table_id, schema=schema)
    types = {f.name: (f.field_type, f.mode) for f in schema}
    field = target.partition_field
    if field and types[field][0] in TIME_PARTITION_TYPES:
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                            field=field)
    clustering = [k for k in target.keys if types[k][0] in CLUSTERABLE and types[k][1] != "REPEATED"][:4]
    if not clustering and target.write_mode == "append":
        # Every append deletes by file id first: clustering on it keeps that delete cheap.
        clustering = [file_id_column]
    table.clustering_fields = clustering or None
    return table


def column_type(col: Column) -> str:
    canonical = normalize_type(col.type)
    if canonical is None:
        raise PermanentError(f"column {col.name} has unknown type {col.type!r}")
    return canonical


def column_mode(col: Column) -> str:
    mode = (col.mode or "NULLABLE").upper()
    if mode not in MODES:
        raise PermanentError(f"column {col.name} has unknown mode {col.mode!r}")
    return mode


def field(name: str, field_type: str, mode: str = "NULLABLE", description: str | None = None) -> Any:
    from google.cloud import bigquery

    if description is None:
        return bigquery.SchemaField(name, field_type, mode=mode)
    return bigquery.SchemaField(name, field_type, mode=mode, description=description)


def missing_columns(existing: list[Any], wanted: list[Any], ref: str) -> list[Any]:
    """Wanted fields the table lacks; PermanentError when a present column has another type."""
    have = {f.name.lower(): f for f in existing}
    missing = []
    for field in wanted:
        found = have.get(field.name.lower())
        if found is None:
            missing.append(field)
            continue
        theirs, ours = type_label(found.field_type, found.mode), type_label(field.field_type, field.mode)
        if theirs != ours:
            raise PermanentError(
                f"column {field.name} is {theirs} in the warehouse but {ours} in the registry ({ref}): type "
                f"changes are not applied automatically; `caf table rebuild {ref.split('.', 1)[-1]}` converts "
                "the table")
    return missing


def checked_type(bq_type: str) -> str:
    canonical = normalize_type(bq_type)
    if canonical is None:
        raise PermanentError(f"unknown type {bq_type!r}")
    return canonical


def type_label(field_type: str, mode: str | None) -> str:
    base = normalize_type(field_type) or field_type
    return f"ARRAY<{base}>" if (mode or "").upper() == "REPEATED" else base
