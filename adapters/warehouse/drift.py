"""A registered definition against its existing warehouse table: what would change (like `terraform plan`).

Per column, one of:
  add      the registry has a column the table lacks: added (NULLABLE) by the sync or the next load
  widen    a safe widening (SAFE_WIDENINGS): every existing value is kept exactly; applied by the sync
  convert  any other type change: existing rows must be rewritten, which only `caf table rebuild`
           does (it refuses, changing nothing, when a value would not convert)

Safe widenings are the lossless ones both warehouses apply in place (BigQuery `ALTER COLUMN SET
DATA TYPE`, DuckDB `ALTER COLUMN TYPE`): INT64 → NUMERIC / BIGNUMERIC, NUMERIC → BIGNUMERIC.
INT64 / NUMERIC → FLOAT64 is not among them (FLOAT64 loses digits beyond 2^53), nor is anything
→ STRING (the text form of existing values is a choice the user makes with `caf table rebuild`).
Warehouse columns the registry no longer lists are kept (reported as `extra`), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from values.tables import LINEAGE, TableTarget

_LINEAGE = frozenset(LINEAGE) | {"_source_file_id"}  # BigQuery reserves `_FILE_`: its file id column differs
SAFE_WIDENINGS = frozenset({("INT64", "NUMERIC"), ("INT64", "BIGNUMERIC"), ("NUMERIC", "BIGNUMERIC")})


def column_type(bq_type: str, mode: str = "NULLABLE") -> str:
    """How a column's type is compared: `ARRAY<T>` for REPEATED columns, else the canonical type."""
    return f"ARRAY<{bq_type}>" if mode == "REPEATED" else bq_type


@dataclass(frozen=True)
class ColumnChange:
    column: str
    action: str
    """add | widen | convert"""
    have: str | None
    want: str

    def describe(self) -> str:
        if self.action == "add":
            return f"add {self.column} {self.want}"
        return f"{self.action} {self.column} {self.have} → {self.want}"


@dataclass(frozen=True)
class TablePlan:
    dataset: str
    table: str
    exists: bool
    changes: tuple[ColumnChange, ...] = ()
    extra: tuple[str, ...] = field(default=())
    """Warehouse columns the registry does not list (kept)."""

    @property
    def name(self) -> str:
        return f"{self.dataset}.{self.table}"

    def of(self, action: str) -> list[ColumnChange]:
        return [c for c in self.changes if c.action == action]

    @property
    def needs_rebuild(self) -> bool:
        return bool(self.of("convert"))

    def summary(self) -> str:
        """One human phrase for the plan of this table."""
        if not self.exists:
            return "created at the first load"
        parts = [c.describe() for c in self.changes]
        if self.extra:
            parts.append(f"kept (not in registry): {', '.join(self.extra)}")
        return "; ".join(parts) if parts else "in sync"

    def as_dict(self) -> dict[str, object]:
        return {"table": self.name, "exists": self.exists, "needs_rebuild": self.needs_rebuild,
                "changes": [{"column": c.column, "action": c.action, "from": c.have, "to": c.want}
                            for c in self.changes],
                "extra_columns": list(self.extra), "summary": self.summary()}


def plan_table(target: TableTarget, existing: dict[str, str] | None) -> TablePlan:
    """Compare `target` (from the registry) with `existing` (`Warehouse.table_columns`, or None)."""
    if existing is None:
        return TablePlan(target.dataset, target.table, exists=False)
    changes = []
    for col in target.columns:
        want = column_type(col.type, col.mode)
        have = existing.get(col.name)
        if have is None:
            changes.append(ColumnChange(col.name, "add", None, want))
        elif have != want and not (col.type == "BIGNUMERIC" and have == "STRING"):
            action = "widen" if (have, want) in SAFE_WIDENINGS else "convert"
            changes.append(ColumnChange(col.name, action, have, want))
    wanted = {c.name for c in target.columns}
    extra = tuple(name for name in existing if name not in wanted and name not in _LINEAGE)
    return TablePlan(target.dataset, target.table, exists=True, changes=tuple(changes), extra=extra)
