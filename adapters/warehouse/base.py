"""The warehouse port: create tables from the registry and load staged Parquet idempotently.

The table shapes it works on (`Column`, `TableTarget`, lineage columns) are ground-floor value
types in `values.tables`: the registry (database/) and the pipeline build them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from values.tables import TableTarget


@dataclass(frozen=True)
class LoadRequest:
    """Load one staged object version into its table, replacing that object's earlier rows.

    Exactly-once effect: `append` deletes the rows of `replace_file_ids` (every generation of
    the same object name, this one included) and inserts the staged rows in one transaction /
    one DML job; `replace` swaps the table (or the `partitions` present in the file); `merge`
    upserts on `keys`.
    """

    target: TableTarget
    staged_uri: str
    file_id: int
    batch_id: int | None
    job_id: str
    """Deterministic per object version: a retried load reattaches instead of running twice."""
    replace_file_ids: tuple[int, ...] = ()
    first_load: bool = False
    """No other generation of this object was ever recorded and this is no reprocess: nothing of
    the object can be in the table but what an earlier attempt of this same request wrote under
    this `job_id`. An `append` may then load straight into the target (BigQuery: one load job,
    free, instead of a scratch table and a billed DML job); other modes ignore it."""
    staged_path: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    rows_loaded: int
    job_id: str | None = None


@dataclass(frozen=True)
class QueryResult:
    rows_affected: int | None
    rows: list[tuple[Any, ...]]
    columns: list[str]
    job_id: str | None = None


class Warehouse(Protocol):
    """DuckDB locally, BigQuery in production. Vendor errors leave as Permanent/TransientError."""

    file_id_column: str

    def table_columns(self, dataset: str, table: str) -> dict[str, str] | None:
        """Existing columns → canonical BigQuery type, or None if the table does not exist."""
        ...

    def ensure_table(self, target: TableTarget, *, add_columns: bool = True) -> None:
        """Create the table (with lineage columns) if missing; add registered columns it lacks;
        raise PermanentError naming the column when an existing column's type differs."""
        ...

    def widen_columns(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Apply safe widenings (adapters.warehouse.drift.SAFE_WIDENINGS) in place: name → new type."""
        ...

    def rebuild_table(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Convert the existing rows of `columns` (name → new type) atomically; PermanentError naming
        the columns and counts, changing nothing, when a non-null value would not convert."""
        ...

    def load(self, request: LoadRequest) -> LoadResult: ...

    def query(self, sql: str, params: dict[str, Any] | None = None, *, job_id: str | None = None,
              labels: dict[str, str] | None = None) -> QueryResult:
        """Run SQL with named parameters (`@name` in BigQuery, `$name` in DuckDB)."""
        ...

    def count_rows(self, dataset: str, table: str) -> int: ...

    def close(self) -> None: ...
