"""DuckDB warehouse: a BigQuery dataset is a DuckDB schema, with the same table names.

DuckDB allows one writer process per database file. Within a process every operation is
serialised by a lock. The connection is kept while work flows (opening a DuckDB file costs
~10 ms and a cold catalog, most of a small file's load) and closed after `idle_seconds`
without use, which releases the file lock so that other processes (`caf status` beside
`caf serve`) can open the file. Opening waits up to `lock_wait_seconds` for another process
to release its lock; a lock still held then surfaces as TransientError (redelivered).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.warehouse.base import LoadRequest, LoadResult, QueryResult
from adapters.warehouse.types import DUCKDB_TYPES, duckdb_type
from errors import PermanentError, TransientError
from values.identifiers import column_name, dataset_name, quote_ident, table_name
from values.tables import LINEAGE_TYPES, TableTarget

_FILES: dict[Path, _File] = {}
_FILES_GUARD = threading.Lock()
_EXITING = threading.Event()
# DuckDB type (as information_schema reports it) → canonical BigQuery type.
_FROM_DUCKDB = {v: k for k, v in DUCKDB_TYPES.items() if k != "BIGNUMERIC"} | {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "INTEGER": "INT64",
    "DECIMAL(18,3)": "NUMERIC",
}
# Bounded memory: DuckDB spills to its temp directory instead of growing past this.
DUCKDB_CONFIG: dict[str, Any] = {"memory_limit": "128MB", "preserve_insertion_order": "false"}
_PARAM = re.compile(r"(?<![:@\w])[@$](\w+)")
IDLE_SECONDS = 1.0
LOCK_WAIT_SECONDS = 5.0


class _File:
    """One database file's connection in this process, shared by every warehouse object on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.conn: Any = None
        self.pid = 0
        self.last_used = 0.0
        self.reaper: threading.Timer | None = None
        self.idle_seconds = IDLE_SECONDS
        # Columns of tables seen over the open connection; dropped with it (another process may
        # change the file once the lock is released) and after any statement that may alter them.
        self.columns: dict[tuple[str, str], dict[str, str]] = {}

    def open(self, lock_wait_seconds: float) -> Any:
        import duckdb

        if self.conn is not None and self.pid == os.getpid():
            return self.conn
        self.conn, self.columns = None, {}  # a forked child never uses its parent's connection
        deadline = time.monotonic() + lock_wait_seconds
        while True:
            try:
                self.conn = duckdb.connect(str(self.path), config=DUCKDB_CONFIG)
                self.pid = os.getpid()
                return self.conn
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise TransientError(f"warehouse file {self.path.name} is busy or unreadable: {exc}") from exc
                time.sleep(0.05)  # another process holds the file: it releases it when idle

    def drop(self) -> None:
        conn, self.conn, self.columns = self.conn, None, {}
        if conn is not None and self.pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()  # closing checkpoints the write-ahead log and releases the file lock

    def used(self) -> None:
        self.last_used = time.monotonic()
        if self.reaper is None or not self.reaper.is_alive():
            self.reaper = threading.Timer(self.idle_seconds, self.release_if_idle)
            self.reaper.daemon = True
            self.reaper.start()

    def release_if_idle(self) -> bool:
        """Close the connection if unused for `idle_seconds` (True when closed); else check later."""
        if not self.lock.acquire(blocking=False):  # in use right now: look again later
            self.reaper = None
            self.used()
            return False
        try:
            self.reaper = None
            if _EXITING.is_set():  # the exit handler closes it, on the main thread
                return False
            idle = time.monotonic() - self.last_used
            if self.conn is not None and idle < self.idle_seconds * 0.9:
                self.reaper = threading.Timer(self.idle_seconds - idle, self.release_if_idle)
                self.reaper.daemon = True
                self.reaper.start()
                return False
            self.drop()
            return True
        finally:
            self.lock.release()


def _file(path: Path) -> _File:
    with _FILES_GUARD:
        key = path.resolve()
        if key not in _FILES:
            _FILES[key] = _File(key)
        return _FILES[key]


@atexit.register
def _close_all() -> None:
    # On the main thread, before interpreter shutdown: a timer thread still inside DuckDB when
    # the interpreter stops daemon threads would abort the process.
    _EXITING.set()
    for f in list(_FILES.values()):
        if f.reaper is not None:
            f.reaper.cancel()
        if f.lock.acquire(timeout=5):  # also waits for a timer thread that is closing it
            try:
                f.drop()
            finally:
                f.lock.release()


class DuckDbWarehouse:
    file_id_column = "_file_id"

    def __init__(self, path: Path, *, idle_seconds: float = IDLE_SECONDS,
                 lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _file(path)
        self._file.idle_seconds = idle_seconds
        self._lock = self._file.lock
        self.lock_wait_seconds = lock_wait_seconds

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """The process's connection to the file (opened on demand), under the in-process lock."""
        import duckdb

        with self._lock:
            conn = self._file.open(self.lock_wait_seconds)
            try:
                yield conn
            except BaseException as exc:
                self._file.drop()  # state unknown after a failure: the next operation starts afresh
                if isinstance(exc, duckdb.TransactionException):
                    raise TransientError(f"warehouse transaction conflict: {exc}") from exc
                if isinstance(exc, duckdb.ConversionException | duckdb.ConstraintException | duckdb.BinderException
                              | duckdb.CatalogException | duckdb.ParserException | duckdb.InvalidInputException):
                    raise PermanentError(f"warehouse rejected the statement: {exc}") from exc
                if isinstance(exc, duckdb.IOException):
                    raise TransientError(f"warehouse I/O error: {exc}") from exc
                raise
            self._file.used()

    def release_if_idle(self) -> bool:
        """Close the connection (releasing the file lock) if unused for `idle_seconds`."""
        return self._file.release_if_idle()

    # -- schema ------------------------------------------------------------------------------
    def table_columns(self, dataset: str, table: str) -> dict[str, str] | None:
        with self.connect() as conn:
            found = self._columns(conn, dataset, table)
        if found is None:
            return None
        return {name: f"ARRAY<{_FROM_DUCKDB.get(t[:-2], t[:-2])}>" if t.endswith("[]") else t
                for name, t in found.items()}

    def _columns(self, conn: Any, dataset: str, table: str) -> dict[str, str] | None:
        cached = self._file.columns.get((dataset, table))
        if cached is not None:
            return cached
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            return None
        found = {name: _FROM_DUCKDB.get(dtype, dtype) for name, dtype in rows}
        self._file.columns[(dataset, table)] = found
        return found

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
                self._file.columns.pop((target.dataset, target.table), None)
                return
            for col in target.columns:
                have = existing.get(col.name)
                want = col.type if col.mode != "REPEATED" else duckdb_type(col.type, col.mode)
                if have is None:
                    if not add_columns:
                        raise PermanentError(f"column {col.name} is not in warehouse table "
                                             f"{target.dataset}.{target.table}")
                    self._file.columns.pop((target.dataset, target.table), None)
                    conn.execute(f"ALTER TABLE {schema}.{table} ADD COLUMN "
                                 f"{quote_ident(column_name(col.name))} {duckdb_type(col.type, col.mode)}")
                elif have != want and not (col.type == "BIGNUMERIC" and have == "STRING"):
                    raise PermanentError(
                        f"column {col.name} is {have} in warehouse table {target.dataset}.{target.table} "
                        f"but {col.type} in the registry: type changes are not applied automatically; "
                        f"`caf table rebuild {target.dataset}.{target.table}` converts the table"
                    )

    def widen_columns(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Safe widenings in place (drift.SAFE_WIDENINGS): column name → new canonical type."""
        self._alter_types(target, columns, check=False)

    def rebuild_table(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Convert the existing rows of `columns` (name → canonical type) in one transaction.

        Refuses, changing nothing, when a non-null value would not convert (PermanentError with counts).
        """
        self._alter_types(target, columns, check=True)

    def _alter_types(self, target: TableTarget, columns: dict[str, str], *, check: bool) -> None:
        schema, table = quote_ident(dataset_name(target.dataset)), quote_ident(table_name(target.table))
        modes = {c.name: c.mode for c in target.columns}
        casts = {name: duckdb_type(bq_type, modes.get(name, "NULLABLE")) for name, bq_type in columns.items()}
        with self.connect() as conn:
            if check:
                bad = []
                for name, new in casts.items():
                    col = quote_ident(column_name(name))
                    n = conn.execute(f"SELECT count(*) FROM {schema}.{table} WHERE {col} IS NOT NULL "
                                     f"AND TRY_CAST({col} AS {new}) IS NULL").fetchone()[0]
                    if n:
                        bad.append(f"{n} value(s) of {name} are not valid {columns[name]}")
                if bad:
                    raise PermanentError(f"{target.dataset}.{target.table} not converted (nothing changed): "
                                         + "; ".join(bad))
            self._file.columns.pop((target.dataset, target.table), None)
            conn.execute("BEGIN TRANSACTION")
            try:
                for name, new in casts.items():
                    col = quote_ident(column_name(name))
                    conn.execute(f"ALTER TABLE {schema}.{table} ALTER COLUMN {col} SET DATA TYPE {new} "
                                 f"USING CAST({col} AS {new})")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- load --------------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> LoadResult:
        target = request.target
        schema, table = quote_ident(dataset_name(target.dataset)), quote_ident(table_name(target.table))
        qualified = f"{schema}.{table}"
        source = str(request.staged_path or request.staged_uri.removeprefix("file://"))
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                self._delete_previous(conn, qualified, target, request, source)
                # BY NAME: the staged columns (a subset of the table's, in any order) go to the
                # columns of the same name; no identifier of the file is pasted into the SQL.
                inserted = conn.execute(
                    f"INSERT INTO {qualified} BY NAME SELECT * FROM read_parquet(?)", [source]).fetchone()
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
        # One placeholder per id: a constant IN list is pushed into the scan and skips row groups
        # by their min/max (~0.4 ms), where `IN (SELECT unnest(?))` joins against every row.
        by_id = (f"DELETE FROM {qualified} WHERE {file_col} IN ({', '.join('?' * len(ids))})" if len(ids) <= 1000
                 else f"DELETE FROM {qualified} WHERE {file_col} IN (SELECT unnest(?::BIGINT[]))")
        id_params: list[Any] = ids if len(ids) <= 1000 else [ids]
        if target.write_mode == "append":
            conn.execute(by_id, id_params)
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
            conn.execute(by_id, id_params)
        else:
            raise PermanentError(f"unknown write_mode {target.write_mode!r}")

    # -- queries -----------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None, *, job_id: str | None = None,
              labels: dict[str, str] | None = None) -> QueryResult:
        """Run SQL with named parameters; `@name` (BigQuery style) is accepted as `$name`."""
        sql = _PARAM.sub(lambda m: f"${m.group(1)}", sql)
        with self.connect() as conn:
            self._file.columns.clear()  # arbitrary SQL may create, alter or drop tables
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
        """Close the connection now (it reopens on the next operation)."""
        with self._lock:
            self._file.drop()

