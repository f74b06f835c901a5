"""Typed models of upload jobs, their files and artifacts, and the JSONB staging of semi-structured rows.

Every table carries `tenant_id` without a default: a row is always written for an explicit
tenant. Child rows reference their parent through composite foreign keys that include
`tenant_id` (`job_file (job_id, tenant_id) → job (id, tenant_id)`, ...), so the database itself
refuses a file, artifact or staged row whose job belongs to another tenant. Row-level security
policies on these tables are created by migration 0002 (see docs/tenancy.md).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from database.base import Base, Timestamps

JOB_STATUSES = ("open", "uploading", "ready", "ingesting", "done", "failed", "canceled")
OPEN_JOB_STATUSES = ("open", "uploading")
"""A job in one of these states is reused when the same file set is declared again."""
JOB_FILE_STATUSES = ("pending", "uploaded", "verified", "failed")
ARTIFACT_TYPES = ("validation_report", "quarantine", "summary")
STAGING_FORMATS = ("csv", "ndjson")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _tenant(index: bool = True) -> Any:
    return mapped_column(String(63), index=index)


class Job(Timestamps, Base):
    """One upload of a file set by a tenant: declared, uploaded through signed URLs, verified, ingested."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("id", "tenant_id"),  # target of the tenant-consistent foreign keys below
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        # At most one open job per tenant and file set: a concurrent re-declaration reuses it.
        Index("uq_job_open_fileset", "tenant_id", "fileset_key", unique=True,
              postgresql_where=text(_in("status", OPEN_JOB_STATUSES))),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          server_default=text("gen_random_uuid()"))
    tenant_id: Mapped[str] = _tenant()
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    checksum: Mapped[str] = mapped_column(String(64))
    """sha256 (hex) of the sorted declared file checksums."""
    fileset_key: Mapped[str] = mapped_column(String(64))
    """sha256 (hex) of the canonical declaration (names, checksums, sizes, content types)."""
    requested_by: Mapped[str] = mapped_column(String(320))
    """The verified identity that opened the job (email, subject or static-token id)."""
    error: Mapped[str | None] = mapped_column(Text)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobFile(Timestamps, Base):
    """A declared file of a job and what verification found."""

    __tablename__ = "job_file"
    __table_args__ = (
        UniqueConstraint("job_id", "name"),
        UniqueConstraint("id", "job_id", "tenant_id"),
        UniqueConstraint("bucket", "storage_path"),
        ForeignKeyConstraint(["job_id", "tenant_id"], ["job.id", "job.tenant_id"], ondelete="CASCADE"),
        CheckConstraint(_in("status", JOB_FILE_STATUSES), name="status"),
        CheckConstraint("size >= 0", name="size"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    tenant_id: Mapped[str] = _tenant()
    name: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(80))
    """Declared, normalised: `sha256:<hex>` or `md5:<hex>`."""
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    bucket: Mapped[str] = mapped_column(String(222))
    storage_path: Mapped[str] = mapped_column(Text)
    """Object name in `bucket` the signed URL uploads to."""
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Artifact(Timestamps, Base):
    """Something a job produced: a validation report, a quarantine file, a summary."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("job_id", "storage_path"),
        ForeignKeyConstraint(["job_id", "tenant_id"], ["job.id", "job.tenant_id"], ondelete="CASCADE"),
        CheckConstraint(_in("type", ARTIFACT_TYPES), name="type"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))  # leads uq_artifacts_job_id_storage_path
    tenant_id: Mapped[str] = _tenant()
    type: Mapped[str] = mapped_column(String(32))
    storage_path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str | None] = mapped_column(String(80))
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))


class StagingEntity(Timestamps, Base):
    """A semi-structured entity (CSV / NDJSON) whose rows are staged as JSONB instead of loaded.

    Interim home of `target: staging` definitions until the table registry carries that key.
    """

    __tablename__ = "staging_entity"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("id", "tenant_id"),
        CheckConstraint(_in("format", STAGING_FORMATS), name="format"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = _tenant()
    name: Mapped[str] = mapped_column(String(300))
    source_glob: Mapped[str] = mapped_column(Text)
    """Glob on the declared file name (same rules as the table registry's source globs)."""
    format: Mapped[str] = mapped_column(String(16))
    column_map: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    """Source field → staged key."""
    required: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    """Staged keys that must be present and non-empty (else the row carries validation errors)."""
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    """CSV dialect: delimiter, quote, encoding."""


class StagingRow(Timestamps, Base):
    """One source row of a staged file, as JSONB, with its file and row lineage."""

    __tablename__ = "staging"
    __table_args__ = (
        UniqueConstraint("job_id", "source_row_id"),
        ForeignKeyConstraint(["job_id", "tenant_id"], ["job.id", "job.tenant_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["job_file_id", "job_id", "tenant_id"],
                             ["job_file.id", "job_file.job_id", "job_file.tenant_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["entity_id", "tenant_id"], ["staging_entity.id", "staging_entity.tenant_id"],
                             ondelete="CASCADE"),
        CheckConstraint("source_row_num >= 1", name="source_row_num"),
        Index("ix_staging_tenant_id_row_checksum", "tenant_id", "row_checksum"),
        Index("ix_staging_entity_id_job_id", "entity_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    job_file_id: Mapped[int] = mapped_column(BigInteger, index=True)
    entity_id: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = _tenant(index=False)  # leads ix_staging_tenant_id_row_checksum
    source_row_num: Mapped[int] = mapped_column(BigInteger)
    """1-based data row of the source file (CSV: first row after the header; NDJSON: non-blank line)."""
    source_row_id: Mapped[str] = mapped_column(Text)
    """`<file name>#<row>`: stable across re-finalizes, unique within the job."""
    row_checksum: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB)
    """{file: {id, name, checksum, bucket, storage_path}, column_map, entity}."""
    validation_errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
