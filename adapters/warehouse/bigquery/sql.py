"""BigQuery SQL built here: the one script that applies a staged file to its table, and a table rebuild.

append: delete the object's earlier rows + insert; replace: swap the partitions the file holds
(or the whole table); merge: MERGE on the keys. Names are validated and quoted (`bq_ident`),
values are parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.warehouse.bigquery.schema import STAGED_AS_STRING, TIME_PARTITION_TYPES, checked_type
from values.identifiers import bq_ident
from values.tables import normalize_type

if TYPE_CHECKING:
    from adapters.warehouse.base import LoadRequest
    from values.tables import TableTarget


def apply_sql(target: TableTarget, schema: list[Any], t: str, s: str, request: LoadRequest, *,
              file_id_column: str) -> tuple[str, list[Any]]:
    """The apply script and its parameters; `t` is the quoted target table, `s` the staging one."""
    from google.cloud import bigquery

    names = [f.name for f in schema]
    column_list = ", ".join(bq_ident(n) for n in names)
    select = ", ".join(from_staged(f) for f in schema)
    insert = f"INSERT INTO {t} ({column_list})\nSELECT {select}\nFROM {s};"
    if target.write_mode == "append":
        file_ids = sorted({int(i) for i in (*request.replace_file_ids, request.file_id)})
        delete = f"DELETE FROM {t} WHERE {bq_ident(file_id_column)} IN UNNEST(@file_ids);"
        params = [bigquery.ArrayQueryParameter("file_ids", "INT64", file_ids)]
        return transaction(delete, insert), params
    if target.write_mode == "replace":
        field = target.partition_field
        if field:
            part = partition_expr(field, next(f.field_type for f in schema if f.name == field))
            col = bq_ident(field)
            delete = (f"DELETE FROM {t}\n"
                      f"WHERE {part} IN (SELECT DISTINCT {part} FROM {s} WHERE {col} IS NOT NULL)\n"
                      f"  OR ({col} IS NULL AND EXISTS (SELECT 1 FROM {s} WHERE {col} IS NULL));")
        else:
            delete = f"DELETE FROM {t} WHERE TRUE;"
        return transaction(delete, insert), []
    keys = set(target.keys)
    on = " AND ".join(f"T.{bq_ident(k)} IS NOT DISTINCT FROM S.{bq_ident(k)}" for k in target.keys)
    updates = ", ".join(f"{bq_ident(n)} = S.{bq_ident(n)}" for n in names if n not in keys)
    source = ", ".join(f"{from_staged(f)} AS {bq_ident(f.name)}" if f.field_type in STAGED_AS_STRING
                       else bq_ident(f.name) for f in schema)
    values = ", ".join(f"S.{bq_ident(n)}" for n in names)
    sql = (f"MERGE {t} AS T\nUSING (SELECT {source} FROM {s}) AS S\nON {on}\n"
           f"WHEN MATCHED THEN UPDATE SET {updates}\n"
           f"WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({values});")
    return sql, []


def from_staged(field: Any) -> str:
    """SELECT expression turning a staged column back into its registered type."""
    col = bq_ident(field.name)
    if field.field_type not in STAGED_AS_STRING:
        return col
    # 'round' rather than the default 'exact': a JSON number beyond FLOAT64 precision should
    # not fail the whole file.
    convert = ("PARSE_JSON({}, wide_number_mode=>'round')" if field.field_type == "JSON"
               else "CAST({} AS BIGNUMERIC)")
    if field.mode == "REPEATED":
        return f"ARRAY(SELECT {convert.format('v')} FROM UNNEST({col}) AS v WITH OFFSET AS o ORDER BY o)"
    return convert.format(col)


def partition_expr(field: str, field_type: str) -> str:
    # Day partitions: every row of a day the file touches is replaced, not just equal values.
    # A DATE column is its own day: BigQuery documents DATE() for TIMESTAMP / DATETIME (and
    # year, month, day), not for a DATE argument, so the column is used as it is.
    if field_type in TIME_PARTITION_TYPES and field_type != "DATE":
        return f"DATE({bq_ident(field)})"
    return bq_ident(field)


def transaction(*statements: str) -> str:
    # A failing statement aborts the script and BigQuery rolls the transaction back.
    return "\n".join(("BEGIN TRANSACTION;", *statements, "COMMIT TRANSACTION;"))


def rebuild_sql(table_sql: str, table: Any, columns: dict[str, str]) -> str:
    """`CREATE OR REPLACE TABLE` over itself: `columns` cast to their new type, the rest as they are."""
    defs, exprs = [], []
    for f in table.schema:
        base = checked_type(columns[f.name]) if f.name in columns else (normalize_type(f.field_type) or f.field_type)
        repeated = f.mode == "REPEATED"
        col = bq_ident(f.name)
        defs.append(f"{col} {f'ARRAY<{base}>' if repeated else base}{' NOT NULL' if f.mode == 'REQUIRED' else ''}")
        if f.name not in columns:
            exprs.append(col)
        elif repeated:
            exprs.append(f"ARRAY(SELECT CAST(v AS {base}) FROM UNNEST({col}) AS v WITH OFFSET AS o ORDER BY o)"
                         f" AS {col}")
        else:
            exprs.append(f"CAST({col} AS {base}) AS {col}")
    options = ""
    partitioning = table.time_partitioning
    if partitioning is not None and partitioning.field:
        kind = next(f.field_type for f in table.schema if f.name == partitioning.field)
        options += f"\nPARTITION BY {partition_expr(partitioning.field, normalize_type(kind) or kind)}"
    if table.clustering_fields:
        options += f"\nCLUSTER BY {', '.join(bq_ident(c) for c in table.clustering_fields)}"
    return (f"CREATE OR REPLACE TABLE {table_sql} ({', '.join(defs)}){options}\n"
            f"AS SELECT {', '.join(exprs)} FROM {table_sql}")
