"""The table registry (`domain` / `tables` / `schemas`): sync from definitions, match objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from database.globs import source_matches
from database.models import Domain, SchemaColumn, Table
from errors import PermanentError
from values.tables import Column, TableTarget

if TYPE_CHECKING:
    from values.definitions import TableDefinition


@dataclass(frozen=True)
class RegisteredTable:
    """A registry row as the pipeline uses it."""

    id: int
    tenant_id: str
    format: str
    options: dict[str, Any]
    column_map: dict[str, str]
    max_bad_records: int
    allow_new_columns: bool
    source_glob: str
    target: TableTarget

    @property
    def qualified(self) -> str:
        return f"{self.target.dataset}.{self.target.table}"


def sync_definition(*, session: Session, definition: TableDefinition, path: Path | None = None) -> str:
    """Upsert one definition; returns 'created', 'updated' or 'unchanged'."""
    if definition.target == "staging":
        return _sync_staging_entity(session=session, definition=definition)
    domain = session.scalar(select(Domain).where(Domain.tenant_id == definition.tenant,
                                                 Domain.name == definition.dataset))
    if domain is None:
        domain = Domain(tenant_id=definition.tenant, name=definition.dataset)
        session.add(domain)
        session.flush()
    table = session.scalar(select(Table).options(selectinload(Table.columns))
                           .where(Table.domain_id == domain.id, Table.name == definition.table))
    checksum = definition.checksum()
    if table is not None and table.definition_checksum == checksum:
        return "unchanged"
    outcome = "updated" if table is not None else "created"
    if table is None:
        table = Table(domain_id=domain.id, name=definition.table, tenant_id=definition.tenant)
        session.add(table)
    table.source_glob = definition.source_glob
    table.format = definition.format
    table.options = definition.reader_options()
    table.column_map = dict(definition.columns)
    table.keys = list(definition.keys)
    table.write_mode = definition.write_mode
    table.partition_field = definition.partition_field
    table.max_bad_records = definition.max_bad_records
    table.allow_new_columns = definition.allow_new_columns
    table.description = definition.description
    table.definition_path = str(path) if path else None
    table.definition_checksum = checksum
    session.flush()
    _sync_columns(session, table, definition)
    return outcome


def _sync_staging_entity(*, session: Session, definition: TableDefinition) -> str:
    """Semi-structured entities land as JSONB rows in Postgres `staging` (upload jobs), not in the warehouse."""
    from database.jobs import sync_staging_entity

    csv = definition.reader_options().get("csv", {})
    sync_staging_entity(session=session, tenant_id=definition.tenant,
                        name=f"{definition.dataset}.{definition.table}", source_glob=definition.source_glob,
                        format="ndjson" if definition.format == "ndjson" else "csv",
                        column_map=dict(definition.columns),
                        required=[c.name for c in definition.schema_ if c.mode == "REQUIRED"],
                        options={k: csv[k] for k in ("delimiter", "quote", "encoding") if k in csv})
    return "updated"


def _sync_columns(session: Session, table: Table, definition: TableDefinition) -> None:
    existing = {c.name: c for c in table.columns}
    wanted = {c.name for c in definition.schema_}
    for column in list(table.columns):
        if column.name not in wanted:
            table.columns.remove(column)
    # Ordinals are rewritten; park them out of the way first to respect UNIQUE(table_id, ordinal).
    for column in table.columns:
        column.ordinal = -column.ordinal - 1000
    session.flush()
    for ordinal, col in enumerate(definition.schema_, start=1):
        row = existing.get(col.name)
        if row is None:
            row = SchemaColumn(name=col.name)
            table.columns.append(row)
        row.ordinal, row.type, row.mode, row.description = ordinal, col.type, col.mode, col.description
    session.flush()


def _specificity(glob: str) -> tuple[int, int]:
    literal = re.split(r"[*?\[]", glob, maxsplit=1)[0]
    return len(literal), -glob.count("*")


def match_table(*, session: Session, bucket: str, name: str, tenant_id: str | None = None,
                per_tenant_datasets: bool = False) -> RegisteredTable | None:
    """The registered table whose source glob matches the object name (most specific wins).

    Tenant isolation by path: a non-default tenant's objects live under `<tenant>/`, and its
    globs are matched against the rest of the name; any other object can only match the default
    tenant's tables. So one tenant's upload can never land in another tenant's table.
    """
    from database.base import DEFAULT_TENANT

    head, _, rest = name.partition("/")
    # One query for the tables of both tenants the name could belong to (the path's head, the
    # default); the head is the tenant only when it owns at least one table.
    owners = [tenant_id] if tenant_id is not None else [DEFAULT_TENANT, head] if rest else [DEFAULT_TENANT]
    query = (select(Table).options(selectinload(Table.columns), joinedload(Table.domain))
             .where(Table.tenant_id.in_(owners)))
    tables = list(session.scalars(query))
    if tenant_id is None:
        tenant_id = head if rest and head != DEFAULT_TENANT and any(t.tenant_id == head for t in tables) \
            else DEFAULT_TENANT
    if tenant_id != DEFAULT_TENANT and head == tenant_id and rest:
        name = rest
    candidates = [t for t in tables if t.tenant_id == tenant_id and source_matches(t.source_glob, name)]
    if not candidates:
        return None
    candidates.sort(key=lambda t: _specificity(t.source_glob), reverse=True)
    if len(candidates) > 1 and _specificity(candidates[0].source_glob) == _specificity(candidates[1].source_glob):
        names = ", ".join(f"{t.domain.name}.{t.name}" for t in candidates)
        raise PermanentError(f"{name} matches several registered tables ({names}); make their sources distinct")
    return to_registered(candidates[0], per_tenant_datasets=per_tenant_datasets)


def get_registered(*, session: Session, table_id: int, per_tenant_datasets: bool = False) -> RegisteredTable:
    table = session.get(Table, table_id, options=[selectinload(Table.columns), selectinload(Table.domain)])
    if table is None:
        raise PermanentError(f"registered table {table_id} no longer exists")
    return to_registered(table, per_tenant_datasets=per_tenant_datasets)


def find_registered(*, session: Session, dataset: str, table: str) -> RegisteredTable | None:
    row = session.scalar(select(Table).join(Domain).where(Domain.name == dataset, Table.name == table)
                         .options(selectinload(Table.columns), selectinload(Table.domain)))
    return to_registered(row) if row else None


def to_registered(table: Table, *, per_tenant_datasets: bool = False) -> RegisteredTable:
    """The registry row for the pipeline; `{tenant}_{dataset}` when datasets are per tenant."""
    from database.tenancy import tenant_dataset

    return RegisteredTable(
        id=table.id,
        tenant_id=table.tenant_id,
        format=table.format,
        options=dict(table.options or {}),
        column_map=dict(table.column_map or {}),
        max_bad_records=table.max_bad_records,
        allow_new_columns=table.allow_new_columns,
        source_glob=table.source_glob,
        target=TableTarget(
            dataset=tenant_dataset(table.domain.name, table.tenant_id, per_tenant=per_tenant_datasets),
            table=table.name,
            columns=tuple(Column(c.name, c.type, c.mode, c.description) for c in table.columns),
            keys=tuple(table.keys or ()),
            partition_field=table.partition_field,
            write_mode=table.write_mode,
        ),
    )
