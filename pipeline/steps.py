"""The steps of the raw-file flow (`pipeline.ingest`) on one object version.

Reader options from the registry and the object's name, read → validate → stage to storage
(with the quarantine object), the load request, the `file_loaded` event and the archive move.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from adapters.warehouse.base import LoadRequest, LoadResult
from database.registry import RegisteredTable
from errors import CafError, PermanentError, TransientError
from pipeline.read import read_batches
from pipeline.source import SourceOptions
from pipeline.stage import Lineage, describe_bad_rows, drop_rows, duplicate_keys, quarantine_lines, stage_batches
from pipeline.validate import BadRow
from values.tables import Column

if TYPE_CHECKING:
    from database.models import File
    from pipeline.ports import IngestPorts
    from values.messages import ObjectRef

log = logging.getLogger("caf.ingest")

EXTENSIONS = {
    "csv": (".csv", ".txt"),
    "tsv": (".tsv", ".tab", ".txt"),
    "ndjson": (".ndjson", ".jsonl", ".json"),
    "json": (".json", ".ndjson", ".jsonl"),
    "parquet": (".parquet", ".pq"),
    "xlsx": (".xlsx", ".xlsm"),
}


class UnsupportedFile(PermanentError):
    pass


@dataclass
class Staged:
    local_path: Path
    staged_uri: str | None
    rows_read: int
    rows_staged: int
    bad_rows: list[BadRow] = field(default_factory=list)
    quarantine_uri: str | None = None
    new_columns: list[str] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return len(self.bad_rows)

    def describe(self) -> str:
        return describe_bad_rows(self.bad_rows)


def source_options(ref: ObjectRef, table: RegisteredTable, deps: IngestPorts) -> SourceOptions:
    """Reader options from the registry, the object's name and its content encoding."""
    name = ref.name
    gz = name.endswith(".gz") or (ref.content_encoding or "").lower() == "gzip"
    base = name[:-3] if name.endswith(".gz") else name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix and suffix not in EXTENSIONS[table.format]:
        raise UnsupportedFile(
            f"{name}: extension {suffix!r} does not fit format {table.format} registered for "
            f"{table.qualified} (expected {', '.join(EXTENSIONS[table.format])}, optionally .gz)"
        )
    csv = dict(table.options.get("csv") or {})
    if table.format == "tsv":
        csv.setdefault("delimiter", "\t")
    cfg = deps.settings.ingest
    return SourceOptions(
        format=table.format,
        delimiter=csv.get("delimiter", ","),
        quote=csv.get("quote", '"'),
        header=csv.get("header", True),
        encoding=csv.get("encoding", "utf-8"),
        null_markers=tuple(csv.get("null_markers", [""])),
        skip_rows=csv.get("skip_rows", 0),
        sheet=table.options.get("sheet"),
        gzip=gz,
        block_size=cfg.block_size_bytes,
        max_decompressed_bytes=cfg.max_decompressed_bytes,
        max_field_bytes=cfg.max_field_bytes,
        read_ahead=ref.size is None or ref.size > cfg.block_size_bytes or gz,
    )


@functools.cache
def _large_blocks_from_mmap() -> None:
    """Pin glibc's mmap threshold at its default 128 KiB (once per process; no-op off glibc).

    The readers hand blocks around as Python bytes of ~2 MiB. After the first such block is
    freed, glibc raises its mmap threshold to fit it, and later blocks come from the heap,
    which does not shrink: ~80 MB of the peak RSS of a large file was freed blocks. With the
    threshold set, each block is mmapped and given back to the system when freed.
    """
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (AttributeError, OSError):  # not glibc: its own allocator policy applies
        pass


_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def read_and_stage(ref: ObjectRef, table: RegisteredTable, deps: IngestPorts, *, file_id: int, batch_id: int,
                   workdir: Path, now: datetime) -> Staged:
    """Read → validate → stage to Parquet; writes the quarantine object when rows were rejected."""
    if ref.size == 0:
        raise UnsupportedFile(f"{ref.name} is empty (0 bytes): nothing to load")
    _large_blocks_from_mmap()
    options = source_options(ref, table, deps)
    path = workdir / "staged.parquet"
    lineage = Lineage(file_id=file_id, batch_id=batch_id, ingested_at=now,
                      file_id_column=deps.warehouse.file_id_column)
    with deps.storage.open_read(ref.bucket, ref.name, ref.generation) as raw:
        stream: Any = StorageStream(raw, where=f"{ref.bucket}/{ref.name}#{ref.generation}")
        result = stage_batches(
            read_batches(stream, options, name=ref.name), target=table.target, column_map=table.column_map,
            allow_new_columns=table.allow_new_columns, header=options.header, lineage=lineage, path=path,
            max_bad_records=table.max_bad_records, keys_per_row=options.format in ("ndjson", "json"),
            overlap=options.read_ahead,
        )
    pa.default_memory_pool().release_unused()  # hand batch buffers back before the load
    staged = Staged(local_path=path, staged_uri=None, rows_read=result.rows_read, rows_staged=result.rows_staged,
                    bad_rows=list(result.bad_rows), new_columns=result.new_columns)
    if staged.rows_rejected <= table.max_bad_records and table.target.keys:
        dups = duplicate_keys(path, table.target.keys, repeat=result.keys_repeat)
        if dups:
            staged.bad_rows = sorted(staged.bad_rows + dups, key=lambda b: b.row)
            if staged.rows_rejected <= table.max_bad_records:
                staged.rows_staged = drop_rows(path, [d.row for d in dups])
    cfg = deps.settings.ingest
    if staged.bad_rows:
        q_name = f"{cfg.quarantine_prefix}{ref.name}.{ref.generation}.rejected.ndjson"
        deps.storage.put_bytes(ref.bucket, q_name, quarantine_lines(staged.bad_rows), "application/x-ndjson")
        staged.quarantine_uri = deps.storage.uri(ref.bucket, q_name)
    if staged.rows_rejected <= table.max_bad_records:
        s_name = staging_name(cfg.staging_prefix, table, file_id, ref.generation)
        # Moved, not copied, into a local bucket (the load then reads it there); uploaded to GCS.
        deps.storage.put_file(ref.bucket, s_name, path, "application/vnd.apache.parquet", move=True)
        staged.local_path = deps.storage.local_path(ref.bucket, s_name) or path
        staged.staged_uri = deps.storage.uri(ref.bucket, s_name)
    return staged


class StorageStream:
    """The object's byte stream, with the stream's own I/O failures made transient.

    A connection dropped halfway through a download says nothing about the file: it must not
    be recorded as a bad file (readers turn some bare OSErrors into "corrupt file"), nor count
    towards the unexpected-failure limit. Raised here, before any parser sees it, it reaches the
    handler as TransientError: the claim is given back and the redelivered event reads again.
    """

    def __init__(self, raw: Any, *, where: str) -> None:
        self._raw = raw
        self._where = where

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except CafError:
            raise
        except OSError as exc:
            raise TransientError(f"reading {self._where} failed: {type(exc).__name__}: {exc}") from exc

    def read(self, size: int = -1) -> bytes:
        return self._call(self._raw.read, size)

    def readinto(self, buffer: Any) -> int:
        return self._call(self._raw.readinto, buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call(self._raw.seek, offset, whence)

    def tell(self) -> int:
        return self._call(self._raw.tell)

    def seekable(self) -> bool:
        try:
            return bool(self._raw.seekable())
        except (AttributeError, OSError, ValueError):
            return False

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(getattr(self._raw, "closed", False))

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def staging_name(prefix: str, table: RegisteredTable, file_id: int, generation: int) -> str:
    return f"{prefix}{table.target.dataset}/{table.target.table}/{file_id}-{generation}.parquet"


def target_with_new_columns(table: RegisteredTable, new_columns: list[str]) -> Any:
    """The registered target plus any new file columns (allow_new_columns), added as NULLABLE STRING."""
    if not new_columns:
        return table.target
    extra = tuple(Column(name, "STRING", "NULLABLE", "added from a source file") for name in new_columns)
    return replace(table.target, columns=table.target.columns + extra)


def job_id(ref_key: str, batch_id: int | None) -> str:
    """Deterministic per object version and batch: a retried load reattaches to the same job."""
    digest = hashlib.sha256(ref_key.encode()).hexdigest()[:32]
    return f"caf_load_{digest}_{batch_id or 0}"


def load(staged: Staged, table: RegisteredTable, deps: IngestPorts, *, file_id: int, batch_id: int,
         replace_file_ids: list[int], generation: int, object_key: str | None = None,
         first_load: bool = False) -> LoadResult:
    request = LoadRequest(
        target=target_with_new_columns(table, staged.new_columns),
        staged_uri=staged.staged_uri or str(staged.local_path),
        staged_path=staged.local_path,
        file_id=file_id,
        batch_id=batch_id,
        job_id=job_id(object_key or f"{file_id}#{generation}", batch_id),
        replace_file_ids=tuple(replace_file_ids),
        first_load=first_load,
        labels={"caf_file_id": str(file_id), "caf_batch_id": str(batch_id)},
    )
    return deps.warehouse.load(request)


def file_loaded_payload(ref: ObjectRef | File, file_id: int, batch_id: int, table: RegisteredTable) -> dict[str, Any]:
    """The `file_loaded` event for the task engine (from the event's ObjectRef or the `files` row)."""
    return {"file_id": file_id, "batch_id": batch_id, "dataset": table.target.dataset,
            "table": table.target.table, "tenant": table.tenant_id, "registered": table.registered,
            "bucket": ref.bucket, "name": ref.name,
            "generation": ref.generation, "md5": ref.md5, "crc32c": ref.crc32c}


def move_processed(ref: ObjectRef, deps: IngestPorts, *, success: bool, file_id: int) -> str | None:
    """Move the raw object to archive/ (or failed/); a failure here is logged, never fatal."""
    cfg = deps.settings.ingest
    if not cfg.move_processed:
        return None
    prefix = cfg.archive_prefix if success else cfg.failed_prefix
    try:
        uri = deps.storage.move(ref.bucket, ref.name, f"{prefix}{ref.name}", generation=ref.generation)
    except CafError as exc:
        log.warning("could not move %s to %s: %s", ref.name, prefix, exc)
        return None
    if uri:
        from database.direct import direct
        from database.files import record_archived

        with direct(deps.sessions) as connection:
            record_archived(connection, file_id=file_id, uri=uri)
    return uri
