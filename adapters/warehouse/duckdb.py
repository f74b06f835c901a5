"""DuckDB warehouse: a BigQuery dataset is a DuckDB schema, with the same table names.

DuckDB allows one writer process per database file. Within a process every operation is
serialised by a lock; a connection is opened per operation and closed after it, so other
processes (`caf status` beside `caf serve`) can use the file between operations. A lock
held by another process surfaces as TransientError (the event is redelivered).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.warehouse.base import LoadRequest, LoadResult, QueryResult
from adapters.warehouse.types import DUCKDB_TYPES, duckdb_type
from errors import PermanentError, TransientError
from values.identifiers import column_name, dataset_name, quote_ident, table_name
from values.tables import LINEAGE_TYPES, TableTarget

_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
# DuckDB type (as information_schema reports it) → canonical BigQuery type.
_FROM_DUCKDB = {v: k for k, v in DUCKDB_TYPES.items() if k != "BIGNUMERIC"} | {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "INTEGER": "INT64",
    "DECIMAL(18,3)": "NUMERIC",
}
# Bounded memory: DuckDB spills to its temp directory instead of growing past this.
DUCKDB_CONFIG: dict[str, Any] = {"memory_limit": "160MB", "preserve_insertion_order": "false"}
_PARAM = re.compile(r"(?<![:@\w])[@$](\w+)")


def _lock_for(path: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path.resolve(), threading.RLock())


class DuckDbWarehouse:
    file_id_column = "_file_id"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_for(path)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        import duckdb

        with self._lock:
            try:
                conn = duckdb.connect(str(self.path), config=DUCKDB_CONFIG)
            except duckdb.IOException as exc:
                raise TransientError(f"warehouse file {self.path.name} is busy or unreadable: {exc}") from exc
            try:
                yield conn
            except duckdb.TransactionException as exc:
                raise TransientError(f"warehouse transaction conflict: {exc}") from exc
            except (duckdb.ConversionException, duckdb.ConstraintException, duckdb.BinderException,
                    duckdb.CatalogException, duckdb.ParserException, duckdb.InvalidInputException) as exc:
                raise PermanentError(f"warehouse rejected the statement: {exc}") from exc
            except duckdb.IOException as exc:
                raise TransientError(f"warehouse I/O error: {exc}") from exc
            finally:
                conn.close()

    # -- schema ------------------------------------------------------------------------------
    def table_columns(self, dataset: str, table: str) -> dict[str, str] | None:
        with self.connect() as conn:
            return self._columns(conn, dataset, table)

    @staticmethod
    def _columns(conn: Any, dataset: str, table: str) -> dict[str, str] | None:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            return None
        return {name: _FROM_DUCKDB.get(dtype, dtype) for name, dtype in rows}

    def ensure_table(self, target: TableTarget, *, add_columns: bool = True) -> None:
        schema, table = quote_ident(dataset_name(target.dataset)), quote_ident(table_name(target.table))
        with self.connect() as conn:
            existing = self._columns(conn, target.dataset, target.table)
            if existing is None:
                cols = [f"{quote_ident(column_name(c.name))} {duckdb_type(c.type, c.mode)}"
                        + (" NOT NULL" if c.mode == "REQUIRED" else "") for c in target.columns]
                cols += [f"{quote_ident(n)} {duckdb_type(t)}" for n, t in LINEAGE_TYPES.items()]
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{table} ({', '.join(cols)})")
                return
            for col in target.columns:
                have = existing.get(col.name)
                want = col.type if col.mode != "REPEATED" else duckdb_type(col.type, col.mode)
                if have is None:
                    if not add_columns:
                        raise PermanentError(f"column {col.name} is not in warehouse table "
                                             f"{target.dataset}.{target.table}")
                    conn.execute(f"ALTER TABLE {schema}.{table} ADD COLUMN "
                                 f"{quote_ident(column_name(col.name))} {duckdb_type(col.type, col.mode)}")
                elif have != want and not (col.type == "BIGNUMERIC" and have == "STRING"):
                    raise PermanentError(
                        f"column {col.name} is {have} in warehouse table {target.dataset}.{target.table} "
                        f"but {col.type} in the registry: type changes are not applied automatically"
                    )

    # -- load --------------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> LoadResult:
        target = request.target
        schema, table = quote_ident(dataset_name(target.dataset)), quote_ident(table_name(target.table))
        qualified = f"{schema}.{table}"
        source = str(request.staged_path or request.staged_uri.removeprefix("file://"))
        with self.connect() as conn:
            staged_cols = _top_level_columns(conn, source)
            cols = ", ".join(quote_ident(column_name(c, allow_lineage=True)) for c in staged_cols)
            conn.execute("BEGIN TRANSACTION")
            try:
                self._delete_previous(conn, qualified, target, request, source)
                inserted = conn.execute(
                    f"INSERT INTO {qualified} ({cols}) SELECT {cols} FROM read_parquet(?)", [source]).fetchone()
                loaded = inserted[0] if inserted else 0
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return LoadResult(rows_loaded=int(loaded), job_id=request.job_id)

    def _delete_previous(self, conn: Any, qualified: str, target: TableTarget, request: LoadRequest,
                         source: str) -> None:
        file_col = quote_ident(self.file_id_column)
        ids = list(request.replace_file_ids) or [request.file_id]
        if target.write_mode == "append":
            conn.execute(f"DELETE FROM {qualified} WHERE {file_col} IN (SELECT unnest(?::BIGINT[]))", [ids])
        elif target.write_mode == "replace":
            if target.partition_field:
                part = quote_ident(column_name(target.partition_field))
                conn.execute(f"DELETE FROM {qualified} WHERE {part} IN "
                             f"(SELECT DISTINCT {part} FROM read_parquet(?))", [source])
            else:
                conn.execute(f"DELETE FROM {qualified}")
        elif target.write_mode == "merge":
            if not target.keys:
                raise PermanentError(f"{target.dataset}.{target.table}: write_mode merge needs keys")
            keys = [quote_ident(column_name(k)) for k in target.keys]
            match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
            conn.execute(f"DELETE FROM {qualified} t USING (SELECT DISTINCT {', '.join(keys)} "
                         f"FROM read_parquet(?)) s WHERE {match}", [source])
            # A redelivered or newer generation of the same object also replaces its own rows.
            conn.execute(f"DELETE FROM {qualified} WHERE {file_col} IN (SELECT unnest(?::BIGINT[]))", [ids])
        else:
            raise PermanentError(f"unknown write_mode {target.write_mode!r}")

    # -- queries -----------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None, *, job_id: str | None = None,
              labels: dict[str, str] | None = None) -> QueryResult:
        """Run SQL with named parameters; `@name` (BigQuery style) is accepted as `$name`."""
        sql = _PARAM.sub(lambda m: f"${m.group(1)}", sql)
        with self.connect() as conn:
            cursor = conn.execute(sql, params or {})
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if cursor.description else []
        affected = None
        if columns == ["Count"] and len(rows) == 1:  # DuckDB reports DML row counts this way
            affected = int(rows[0][0])
        return QueryResult(rows_affected=affected, rows=rows, columns=columns, job_id=job_id)

    def count_rows(self, dataset: str, table: str) -> int:
        qualified = f"{quote_ident(dataset_name(dataset))}.{quote_ident(table_name(table))}"
        with self.connect() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0])

    def close(self) -> None:
        return None


def _top_level_columns(conn: Any, source: str) -> list[str]:
    return [r[0] for r in conn.execute("DESCRIBE SELECT * FROM read_parquet(?)", [source]).fetchall()]
