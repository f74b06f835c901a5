"""Typed SQLAlchemy 2 models of everything CAF remembers.

Status columns are short strings guarded by CHECK constraints (cheaper to evolve than
Postgres enums). The Alembic migrations under `migrations/versions` produce exactly these.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from database.base import Base, TenantOwned, Timestamps

FILE_STATUSES = ("NEW", "PROCESSING", "SUCCESS", "ERROR")
TASK_STATUSES = ("PROCESSING", "SUCCESS", "ERROR", "SKIPPED")
TRY_STATUSES = ("ERROR", "SKIPPED", "RETRIED")
"""How an earlier try of a task run ended: failed or skipped (then restarted), or failed transiently (retried)."""
BATCH_STATUSES = ("PROCESSING", "SUCCESS", "ERROR")
TASK_KINDS = ("sql", "dataform", "powerbi", "python", "wait_for_files")
FILE_FORMATS = ("csv", "tsv", "ndjson", "json", "parquet", "xlsx")
WRITE_MODES = ("append", "replace", "merge")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# -- table registry ------------------------------------------------------------------------
class Domain(TenantOwned, Timestamps, Base):
    """A dataset (BigQuery) / schema (DuckDB)."""

    __tablename__ = "domain"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str | None] = mapped_column(Text)

    tables: Mapped[list[Table]] = relationship(back_populates="domain")


class Table(TenantOwned, Timestamps, Base):
    """A registered warehouse table, with how its source files are read and written."""

    __tablename__ = "tables"
    __table_args__ = (
        UniqueConstraint("domain_id", "name"),
        UniqueConstraint("id", "tenant_id"),  # target of tenant-consistent foreign keys
        CheckConstraint(_in("format", FILE_FORMATS), name="format"),
        CheckConstraint(_in("write_mode", WRITE_MODES), name="write_mode"),
        CheckConstraint("max_bad_records >= 0", name="max_bad_records"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1024))
    source_glob: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    """Reader options: csv dialect, xlsx sheet."""
    column_map: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    keys: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    write_mode: Mapped[str] = mapped_column(String(16), server_default="append")
    partition_field: Mapped[str | None] = mapped_column(String(300))
    max_bad_records: Mapped[int] = mapped_column(Integer, server_default="0")
    allow_new_columns: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    description: Mapped[str | None] = mapped_column(Text)
    definition_path: Mapped[str | None] = mapped_column(Text)
    definition_checksum: Mapped[str | None] = mapped_column(String(64))

    domain: Mapped[Domain] = relationship(back_populates="tables")
    columns: Mapped[list[SchemaColumn]] = relationship(
        back_populates="table", order_by="SchemaColumn.ordinal", cascade="all, delete-orphan"
    )


class SchemaColumn(TenantOwned, Timestamps, Base):
    """One column of a registered table, in BigQuery's type vocabulary (its table's tenant's)."""

    __tablename__ = "schemas"
    __table_args__ = (
        ForeignKeyConstraint(["table_id", "tenant_id"], ["tables.id", "tables.tenant_id"], ondelete="CASCADE"),
        UniqueConstraint("table_id", "name"),
        UniqueConstraint("table_id", "ordinal"),
        CheckConstraint(_in("mode", ("NULLABLE", "REQUIRED", "REPEATED")), name="mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    table_id: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300))
    type: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16), server_default="NULLABLE")
    description: Mapped[str | None] = mapped_column(Text)

    table: Mapped[Table] = relationship(back_populates="columns")


# -- task definitions ------------------------------------------------------------------------
class Query(TenantOwned, Timestamps, Base):
    """SQL text of a `sql` task; parameters are declared, never formatted into the text."""

    __tablename__ = "query"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    sql_text: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class Repo(TenantOwned, Timestamps, Base):
    """A Dataform repository and what to compile / run from it."""

    __tablename__ = "repo"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    project: Mapped[str] = mapped_column(String(300))
    location: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str] = mapped_column(String(300))
    git_commitish: Mapped[str | None] = mapped_column(String(300))
    workspace: Mapped[str | None] = mapped_column(String(300))
    release_config: Mapped[str | None] = mapped_column(String(300))
    included_tags: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    included_targets: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    transitive_dependencies: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    transitive_dependents: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    full_refresh: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    compilation_vars: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    service_account: Mapped[str | None] = mapped_column(String(300))


class PowerBiReport(TenantOwned, Timestamps, Base):
    """A Power BI dataset (semantic model) to refresh, and the report it serves."""

    __tablename__ = "power_bi_report"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    group_id: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str] = mapped_column(String(64))
    report_id: Mapped[str | None] = mapped_column(String(64))
    refresh_body: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """Optional enhanced-refresh request body."""
    daily_limit: Mapped[int] = mapped_column(Integer, server_default="8")


class PowerBiRefreshDay(Timestamps, Base):
    """Refreshes CAF has started per Power BI dataset and UTC day: the daily limit is taken here
    under a row lock, so two tasks starting at once cannot both pass it."""

    __tablename__ = "power_bi_refresh_day"

    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, server_default="0")


class Task(TenantOwned, Timestamps, Base):
    """A node of a DAG: what to run, when, and how often to retry."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("id", "tenant_id"),  # edges and runs reference (id, tenant_id): one tenant each
        CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    dag: Mapped[str | None] = mapped_column(String(300), index=True)
    schedule: Mapped[str | None] = mapped_column(String(120))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    timeout_seconds: Mapped[int] = mapped_column(Integer, server_default="3600")
    on_file: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    """Kind payload: python callable path, wait_for_files tables, ..."""
    query_id: Mapped[int | None] = mapped_column(ForeignKey("query.id", ondelete="SET NULL"))
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repo.id", ondelete="SET NULL"))
    power_bi_report_id: Mapped[int | None] = mapped_column(
        ForeignKey("power_bi_report.id", ondelete="SET NULL")
    )
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    definition_checksum: Mapped[str | None] = mapped_column(String(64))


class TaskDependency(TenantOwned, Timestamps, Base):
    """Edge parent → child: the child may run once all its parents succeeded in the batch.

    Both ends are tasks of the edge's tenant (composite foreign keys): a DAG never crosses tenants.
    """

    __tablename__ = "task_dependencies"
    __table_args__ = (
        ForeignKeyConstraint(["parent_id", "tenant_id"], ["tasks.id", "tasks.tenant_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["child_id", "tenant_id"], ["tasks.id", "tasks.tenant_id"], ondelete="CASCADE"),
        UniqueConstraint("parent_id", "child_id"),
        CheckConstraint("parent_id <> child_id", name="no_self_edge"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int] = mapped_column(Integer, index=True)
    child_id: Mapped[int] = mapped_column(Integer, index=True)


# -- runs --------------------------------------------------------------------------------------
class TaskBatch(TenantOwned, Timestamps, Base):
    """One run of a DAG or of the sub-DAG below some root tasks."""

    __tablename__ = "task_batch"
    __table_args__ = (CheckConstraint(_in("status", BATCH_STATUSES), name="status"),
                      UniqueConstraint("id", "tenant_id"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), server_default="PROCESSING")
    trigger: Mapped[str] = mapped_column(String(32))
    """schedule | file | cli | restart | reprocess"""
    root: Mapped[str | None] = mapped_column(Text)
    roots: Mapped[list[int]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskLog(TenantOwned, Timestamps, Base):
    """One task run in a batch: claimed once, retried in place (attempt), never run twice.

    The run, its task and its batch share one tenant (composite foreign keys): a tenant's batch
    can never run another tenant's task.
    """

    __tablename__ = "task_log"
    __table_args__ = (
        ForeignKeyConstraint(["task_id", "tenant_id"], ["tasks.id", "tasks.tenant_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["batch_id", "tenant_id"], ["task_batch.id", "task_batch.tenant_id"],
                             ondelete="CASCADE"),
        UniqueConstraint("batch_id", "task_id"),
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), server_default="PROCESSING")
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    remote_id: Mapped[str | None] = mapped_column(Text)
    """Dataform invocation name / Power BI request id, recorded before anything can redeliver."""
    run_key: Mapped[str | None] = mapped_column(String(64))
    """Digest of the run's inputs (file checksums, upstream run keys, query text)."""
    children_published: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class TaskTry(TenantOwned, Timestamps, Base):
    """An earlier try of a task run, kept when the run is retried or restarted (`task_log` holds the latest).

    A transient failure retried in place leaves a RETRIED try per attempt; a restart of the batch
    leaves the ERROR or SKIPPED run as it was. Like Airflow's try history: nothing is overwritten.
    """

    __tablename__ = "task_try"
    __table_args__ = (CheckConstraint(_in("status", TRY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_log_id: Mapped[int] = mapped_column(ForeignKey("task_log.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("task_batch.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    restart: Mapped[int] = mapped_column(Integer, server_default="0")
    """How many restarts of the batch came before this try (0: the batch's first run)."""
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    remote_id: Mapped[str | None] = mapped_column(Text)


class File(TenantOwned, Timestamps, Base):
    """One object version `(bucket, name, generation)` and what became of it."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("bucket", "name", "generation"),
        CheckConstraint(_in("status", FILE_STATUSES), name="status"),
        Index("ix_files_bucket_name", "bucket", "name"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(222))
    name: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="NEW", index=True)
    md5: Mapped[str | None] = mapped_column(String(64))
    crc32c: Mapped[str | None] = mapped_column(String(16))
    size: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    content_encoding: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(255))
    rows_read: Mapped[int | None] = mapped_column(BigInteger)
    rows_loaded: Mapped[int | None] = mapped_column(BigInteger)
    rows_rejected: Mapped[int | None] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    """Non-error notes, e.g. 'superseded by generation N'."""
    table_id: Mapped[int | None] = mapped_column(ForeignKey("tables.id", ondelete="SET NULL"), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("task_batch.id", ondelete="SET NULL"), index=True)
    task_log_id: Mapped[int | None] = mapped_column(ForeignKey("task_log.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    staged_uri: Mapped[str | None] = mapped_column(Text)
    archived_uri: Mapped[str | None] = mapped_column(Text)
    quarantine_uri: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    """The last transient failure (warehouse busy, storage 5xx...), kept after the claim is given back."""
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the claim was last given back; NEW for long after it means no redelivery came: stalled."""


class Outbox(TenantOwned, Base):
    """Events to publish, written in the same transaction as the state change they announce.

    Published right after commit; anything left unpublished (publisher down) is drained by the
    next event or a sweep, so a "file loaded" event is never lost.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attributes: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


from database import job_models  # noqa: E402,F401  (registers job tables)
