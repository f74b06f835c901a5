"""The table registry (`domain` / `tables` / `schemas`): sync from definitions, match objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload

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
    registered: str = ""
    """`dataset.table` as the tenant registered it (its `on_file` name); `target` is the physical table."""

    @property
    def qualified(self) -> str:
        return f"{self.target.dataset}.{self.target.table}"


class TableOwnedElsewhere(PermanentError):
    """The physical warehouse table is registered to another tenant: one table, one tenant."""


def sync_definition(*, session: Session, definition: TableDefinition, path: Path | None = None,
                    per_tenant_datasets: bool = True) -> str:
    """Upsert one definition; returns 'created', 'updated' or 'unchanged'.

    Refuses (TableOwnedElsewhere) a definition whose physical warehouse table — `dataset.table`, or
    `{tenant}_{dataset}.table` with per-tenant datasets — another tenant already registered.
    """
    from database.tenancy import validate_tenant

    validate_tenant(definition.tenant)
    if definition.target == "staging":
        return _sync_staging_entity(session=session, definition=definition)
    # Serialise registrations: two tenants syncing the same physical table at once cannot both pass.
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("caf-registry-owners"))))
    owner = physical_owner(session=session, dataset=definition.dataset, table=definition.table,
                           tenant_id=definition.tenant, per_tenant_datasets=per_tenant_datasets)
    if owner is not None:
        raise TableOwnedElsewhere(
            f"{owner[1]} is already registered by tenant {owner[0]}; a warehouse table belongs to one tenant. "
            f"Register tenant {definition.tenant}'s table under another dataset or name"
            + ("" if per_tenant_datasets else ", or set jobs.per_tenant_datasets: true"))
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
            row = SchemaColumn(name=col.name, tenant_id=table.tenant_id)
            table.columns.append(row)
        row.ordinal, row.type, row.mode, row.description = ordinal, col.type, col.mode, col.description
    session.flush()


def _specificity(glob: str) -> tuple[int, int]:
    literal = re.split(r"[*?\[]", glob, maxsplit=1)[0]
    return len(literal), -glob.count("*")


def match_table(*, session: Session, bucket: str, name: str, tenant_id: str | None = None,
                per_tenant_datasets: bool = True) -> RegisteredTable | None:
    """The registered table of `tenant_id` whose source glob matches the object name (most specific wins).

    Tenant isolation by path: a non-default tenant's objects live under `<tenant>/`, and its
    globs are matched against the rest of the name. `tenant_id` is the tenant the caller knows
    (an upload job's); None derives it from the landing path (raw objects only). An object under
    a known tenant's prefix is never matched for the default tenant, and an object outside a
    tenant's prefix is never matched for that tenant (PermanentError naming both).
    """
    tenant_id, name = object_tenant(session=session, name=name, tenant_id=tenant_id)
    return match_in_tenant(session=session, tenant_id=tenant_id, relative_name=name,
                           per_tenant_datasets=per_tenant_datasets)


def match_in_tenant(*, session: Session, tenant_id: str, relative_name: str,
                    per_tenant_datasets: bool = True) -> RegisteredTable | None:
    """`match_table` once the tenant and the name under its prefix are known (`object_tenant`).

    Two statements whatever the registry's size, read as plain rows (no ORM objects): the
    tenant's tables (globs matched here), then the winner's columns.
    """
    tables = session.execute(_TENANT_TABLES, {"tenant": tenant_id}).mappings().all()
    candidates = [t for t in tables if source_matches(t["source_glob"], relative_name)]
    if not candidates:
        return None
    candidates.sort(key=lambda t: _specificity(t["source_glob"]), reverse=True)
    if len(candidates) > 1 and _specificity(candidates[0]["source_glob"]) == _specificity(
            candidates[1]["source_glob"]):
        names = ", ".join(f"{t['dataset']}.{t['name']}" for t in candidates)
        raise PermanentError(f"{relative_name} matches several registered tables ({names}); "
                             "make their sources distinct")
    winner = candidates[0]
    columns = session.execute(_TABLE_COLUMNS, {"table_id": winner["id"]}).all()
    return _registered(winner, [Column(*c) for c in columns], per_tenant_datasets=per_tenant_datasets)


_TENANT_TABLES = text(
    "SELECT t.id, t.tenant_id, t.name, t.source_glob, t.format, t.options, t.column_map, t.keys, t.write_mode,"
    " t.partition_field, t.max_bad_records, t.allow_new_columns, d.name AS dataset"
    " FROM tables t JOIN domain d ON d.id = t.domain_id WHERE t.tenant_id = :tenant")
_TABLE_COLUMNS = text("SELECT name, type, mode, description FROM schemas WHERE table_id = :table_id ORDER BY ordinal")


def object_tenant(*, session: Session, name: str, tenant_id: str | None = None) -> tuple[str, str]:
    """(tenant, name relative to its prefix) of a landing object; see `match_table`."""
    from database.base import DEFAULT_TENANT
    from database.tenancy import validate_tenant

    head, _, rest = name.partition("/")
    prefixed = bool(rest) and head != DEFAULT_TENANT and head in known_tenants(session=session, candidate=head)
    if tenant_id is None:
        tenant_id = head if prefixed else DEFAULT_TENANT
    validate_tenant(tenant_id)
    if tenant_id == DEFAULT_TENANT:
        if prefixed:
            raise PermanentError(f"{name} lies under tenant {head}'s prefix {head}/; "
                                 "the default tenant cannot load it")
        return tenant_id, name
    if head != tenant_id or not rest:
        raise PermanentError(f"{name} is not under tenant {tenant_id}'s prefix {tenant_id}/")
    return tenant_id, rest


def known_tenants(*, session: Session, candidate: str | None = None) -> set[str]:
    """Tenants with registered tables or staging entities: their names are landing prefixes.

    `candidate`: only ask whether that one tenant is known (one indexed lookup per object).
    """
    from database.job_models import StagingEntity

    if candidate is not None:  # one prepared statement per object: is this landing prefix a tenant?
        return {candidate} if session.execute(_TENANT_KNOWN, {"t": candidate}).scalar() else set()
    return set(session.scalars(select(Table.tenant_id).union(select(StagingEntity.tenant_id))))


_TENANT_KNOWN = text("SELECT EXISTS (SELECT 1 FROM tables WHERE tenant_id = :t)"
                     " OR EXISTS (SELECT 1 FROM staging_entity WHERE tenant_id = :t)")


def physical_owner(*, session: Session, dataset: str, table: str, tenant_id: str,
                   per_tenant_datasets: bool, before: int | None = None) -> tuple[str, str] | None:
    """(tenant, physical `dataset.table`) of another tenant's registration of the same warehouse table.

    `before`: only registrations older than that table id (the first registration owns the table).
    Compared case-insensitively (DuckDB schemas are). None when no other tenant writes that table.
    """
    from database.tenancy import tenant_dataset

    wanted = f"{tenant_dataset(dataset, tenant_id, per_tenant=per_tenant_datasets)}.{table}".lower()
    # Only registrations with the same table name can map to the same physical table.
    rows = session.execute(_SAME_NAME_ELSEWHERE, {"tenant": tenant_id, "table": table, "before": before})
    for owner, ds, name in rows:
        physical = f"{tenant_dataset(ds, owner, per_tenant=per_tenant_datasets)}.{name}"
        if physical.lower() == wanted:
            return owner, physical
    return None


_SAME_NAME_ELSEWHERE = text(
    "SELECT t.tenant_id, d.name, t.name FROM tables t JOIN domain d ON d.id = t.domain_id"
    " WHERE t.tenant_id <> :tenant AND lower(t.name) = lower(:table)"
    " AND (CAST(:before AS integer) IS NULL OR t.id < CAST(:before AS integer)) ORDER BY t.id")


def check_owner(*, session: Session, table: RegisteredTable, tenant_id: str, per_tenant_datasets: bool) -> None:
    """Before a load: the matched table is the object's tenant's, and no earlier registration of another
    tenant maps to the same physical table (a registry synced before ownership was checked)."""
    if table.tenant_id != tenant_id:
        raise TableOwnedElsewhere(f"{table.qualified} belongs to tenant {table.tenant_id}, not {tenant_id}")
    dataset, _, name = table.registered.partition(".")
    owner = physical_owner(session=session, dataset=dataset, table=name, tenant_id=tenant_id,
                           per_tenant_datasets=per_tenant_datasets, before=table.id)
    if owner is not None:
        raise TableOwnedElsewhere(f"{owner[1]} is registered by tenant {owner[0]} first; tenant {tenant_id}'s "
                                  f"{table.registered} is not loaded until one of them moves to another dataset")


def get_registered(*, session: Session, table_id: int, per_tenant_datasets: bool = True) -> RegisteredTable:
    table = session.get(Table, table_id, options=[selectinload(Table.columns), selectinload(Table.domain)])
    if table is None:
        raise PermanentError(f"registered table {table_id} no longer exists")
    return to_registered(table, per_tenant_datasets=per_tenant_datasets)


def find_registered(*, session: Session, dataset: str, table: str, tenant_id: str = "default",
                    per_tenant_datasets: bool = True) -> RegisteredTable | None:
    """The tenant's registration of `dataset.table` (as registered, not the physical name)."""
    row = session.scalar(select(Table).join(Domain).where(Domain.name == dataset, Table.name == table,
                                                          Table.tenant_id == tenant_id)
                         .options(selectinload(Table.columns), selectinload(Table.domain)))
    return to_registered(row, per_tenant_datasets=per_tenant_datasets) if row else None


def to_registered(table: Table, *, per_tenant_datasets: bool = True) -> RegisteredTable:
    """The registry row for the pipeline; `{tenant}_{dataset}` when datasets are per tenant."""
    fields = {f: getattr(table, f) for f in _TABLE_FIELDS}
    return _registered({**fields, "dataset": table.domain.name},
                       [Column(c.name, c.type, c.mode, c.description) for c in table.columns],
                       per_tenant_datasets=per_tenant_datasets)


_TABLE_FIELDS = ("id", "tenant_id", "name", "source_glob", "format", "options", "column_map", "keys", "write_mode",
                 "partition_field", "max_bad_records", "allow_new_columns")


def _registered(table: Any, columns: list[Column], *, per_tenant_datasets: bool) -> RegisteredTable:
    from database.tenancy import tenant_dataset

    return RegisteredTable(
        id=table["id"],
        tenant_id=table["tenant_id"],
        format=table["format"],
        options=dict(table["options"] or {}),
        column_map=dict(table["column_map"] or {}),
        max_bad_records=table["max_bad_records"],
        allow_new_columns=table["allow_new_columns"],
        source_glob=table["source_glob"],
        target=TableTarget(
            dataset=tenant_dataset(table["dataset"], table["tenant_id"], per_tenant=per_tenant_datasets),
            table=table["name"],
            columns=tuple(columns),
            keys=tuple(table["keys"] or ()),
            partition_field=table["partition_field"],
            write_mode=table["write_mode"],
        ),
        registered=f"{table['dataset']}.{table['name']}",
    )
