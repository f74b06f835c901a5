"""The object-storage port: what ingestion needs from a bucket, whatever backs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from errors import PermanentError


class ObjectNotFound(PermanentError):
    """The object (or that generation of it) does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    name: str
    generation: int
    size: int
    md5: str | None = None
    """Base64 MD5 of the content, as GCS reports it."""
    crc32c: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    updated: datetime | None = None


class ObjectStorage(Protocol):
    """Buckets of objects. Names are GCS object names; adapters keep them inside their bucket."""

    def stat(self, bucket: str, name: str) -> ObjectInfo: ...

    def open_read(self, bucket: str, name: str, generation: int | None = None) -> BinaryIO:
        """A binary stream of the object; raises ObjectNotFound if that version is gone."""
        ...

    def put_file(self, bucket: str, name: str, path: Path, content_type: str | None = None, *,
                 move: bool = False) -> ObjectInfo:
        """Store the file at `path` as the object. `move`: the caller gives `path` up — a local
        adapter renames it into the bucket when it can (no copy, no MD5: `md5` is None and `stat`
        computes it); a remote one uploads it as usual and leaves it in place."""
        ...

    def put_bytes(self, bucket: str, name: str, data: bytes, content_type: str | None = None) -> ObjectInfo: ...

    def move(self, bucket: str, name: str, new_name: str, generation: int | None = None) -> str | None:
        """Move an object (only that generation when given); returns the new URI, None if gone."""
        ...

    def delete(self, bucket: str, name: str) -> None: ...

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]: ...

    def uri(self, bucket: str, name: str) -> str: ...

    def local_path(self, bucket: str, name: str) -> Path | None:
        """A filesystem path for the object when the adapter is local (DuckDB reads it directly)."""
        ...
