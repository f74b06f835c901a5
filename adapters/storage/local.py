"""Local storage: each bucket is a sub-folder; the generation is the file's mtime in ns."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import mmap
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from adapters.storage.base import ObjectInfo, ObjectNotFound
from errors import PermanentError

_BUCKET_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_SEGMENT_MAX_BYTES = 255  # NAME_MAX of common filesystems; GCS allows longer path segments
_TMP_PREFIX = ".tmp-"
"""File names of objects being written (renamed into place when complete): never listed, and no
object name may end in one."""


class UnsafeObjectName(PermanentError):
    """An object name that would escape its bucket folder on a filesystem."""


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------
    def _bucket_dir(self, bucket: str) -> Path:
        if not bucket or not set(bucket) <= _BUCKET_OK or bucket.startswith("."):
            raise UnsafeObjectName(f"bucket name {bucket!r} is not a valid bucket name")
        return self.root / bucket

    def _path(self, bucket: str, name: str) -> Path:
        parts = PurePosixPath(name).parts
        # "a//b" and "a/./b" are other GCS objects than "a/b" but the same local file: refused too.
        if not name or name.startswith("/") or any(p in ("..", ".") for p in parts) or "\x00" in name \
                or "/".join(parts) != name \
                or any(len(p.encode("utf-8", "surrogatepass")) > _SEGMENT_MAX_BYTES for p in parts):
            raise UnsafeObjectName(f"object name {name[:200]!r} cannot be stored in a local folder")
        if parts[-1].startswith(_TMP_PREFIX):
            raise UnsafeObjectName(f"object name {name[:200]!r} cannot be stored in a local folder: file names "
                                   f"starting with {_TMP_PREFIX} are objects still being written")
        return self._bucket_dir(bucket).joinpath(*parts)

    def local_path(self, bucket: str, name: str) -> Path | None:
        return self._path(bucket, name)

    def uri(self, bucket: str, name: str) -> str:
        return f"file://{self._path(bucket, name)}"

    # -- reads ----------------------------------------------------------------------------
    def stat(self, bucket: str, name: str) -> ObjectInfo:
        path = self._path(bucket, name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"{bucket}/{name} does not exist") from None
        return _info(bucket, name, st, _md5(path))

    def open_read(self, bucket: str, name: str, generation: int | None = None) -> BinaryIO:
        path = self._path(bucket, name)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"{bucket}/{name} does not exist") from None
        if generation is not None and os.fstat(handle.fileno()).st_mtime_ns != generation:
            handle.close()
            raise ObjectNotFound(f"{bucket}/{name} generation {generation} no longer exists")
        return handle

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        base = self._bucket_dir(bucket)
        if not base.exists():
            return []
        found = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(_TMP_PREFIX):  # a write not yet published
                name = path.relative_to(base).as_posix()
                if name.startswith(prefix):
                    found.append(self.stat(bucket, name))
        return found

    # -- writes ---------------------------------------------------------------------------
    def put_file(self, bucket: str, name: str, path: Path, content_type: str | None = None, *,
                 move: bool = False) -> ObjectInfo:
        if move:
            target = self._path(bucket, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:  # the same file system: a rename, atomic like the copy below and without reading it
                os.replace(path, target)
                return _info(bucket, name, target.stat(), None)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        return self.copy_in(bucket, name, path).publish()

    def copy_in(self, bucket: str, name: str, path: Path) -> PendingObject:
        """A copy of the file at `path` beside object `name`, with its MD5, not visible yet:
        `publish()` renames it into place (readers never see a half-written object) and
        `discard()` removes it. `caf ingest` copies on a thread while it starts up and publishes
        only once the metadata database answered, as when it copied after."""
        target = self._path(bucket, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=_TMP_PREFIX)  # noqa: SIM115
        try:
            with tmp_file as tmp, path.open("rb", buffering=0) as src:
                md5 = _copy(src, tmp)
        except BaseException:
            Path(tmp_file.name).unlink(missing_ok=True)
            raise
        return PendingObject(bucket, name, target, Path(tmp_file.name), md5)

    def put_bytes(self, bucket: str, name: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        target = self._path(bucket, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=_TMP_PREFIX) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        return _info(bucket, name, target.stat(), md5)

    def move(self, bucket: str, name: str, new_name: str, generation: int | None = None) -> str | None:
        source, target = self._path(bucket, name), self._path(bucket, new_name)
        try:
            if generation is not None and source.stat().st_mtime_ns != generation:
                return None  # a newer version landed meanwhile: leave it for its own event
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except FileNotFoundError:
            return None
        return self.uri(bucket, new_name)

    def delete(self, bucket: str, name: str) -> None:
        self._path(bucket, name).unlink(missing_ok=True)


@dataclass(frozen=True)
class PendingObject:
    """A local object's content copied beside it (`LocalStorage.copy_in`), not yet the object."""

    bucket: str
    name: str
    target: Path
    tmp: Path
    md5: str

    def publish(self) -> ObjectInfo:
        """Rename the copy into place; its generation is the time of publication, as in GCS (so a
        copy made earlier cannot publish a generation older than one published meanwhile)."""
        now = time.time_ns()
        os.utime(self.tmp, ns=(now, now))
        os.replace(self.tmp, self.target)
        return _info(self.bucket, self.name, self.target.stat(), self.md5)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


_HASH_WINDOW = 32 << 20
"""Bytes of a copy mapped at a time to hash it (mapped pages count in the process's RSS)."""
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def _copy(src: io.FileIO, dst: IO[bytes]) -> str:
    """Copy `src` to `dst`; the base64 MD5 of the copy.

    The kernel copies (`copy_file_range`) and the copy is hashed mapped 32 MiB at a time: a few
    calls, each releasing the GIL for its whole span. On a thread beside a main thread busy
    importing (`caf ingest`), a loop of 1 MiB read/hash/write steps waited up to the 5 ms switch
    interval for the GIL at each step (~350 per 100 MB: 1.0-1.7 s instead of 0.25 s), and 8 MiB
    steps, though fewer, passed every byte through memory three times instead of the CPU cache
    (twice the system time). A pipe, or a file system the kernel cannot copy between, gets the loop.
    """
    copied = _kernel_copy(src.fileno(), dst.fileno())
    if copied is None:
        return _copy_hashing(src, dst)
    return _mapped_md5(dst.fileno(), copied)


def _mapped_md5(fd: int, size: int) -> str:
    """The base64 MD5 of the file's first `size` bytes, hashed mapped `_HASH_WINDOW` bytes at a time."""
    digest = hashlib.md5(usedforsecurity=False)
    for offset in range(0, size, _HASH_WINDOW):
        with mmap.mmap(fd, min(_HASH_WINDOW, size - offset), offset=offset, access=mmap.ACCESS_READ) as window:
            digest.update(window)
    return base64.b64encode(digest.digest()).decode()


def _kernel_copy(src: int, dst: int) -> int | None:
    """Bytes `copy_file_range` copied from `src` to `dst`; None when it copied nothing it should have."""
    copy_range = getattr(os, "copy_file_range", None)  # Linux only
    if copy_range is None:
        return None
    total = 0
    while True:
        try:
            n = copy_range(src, dst, 1 << 30)
        except OSError as exc:
            if total == 0 and exc.errno in _NO_KERNEL_COPY:
                return None
            raise
        if n == 0:
            break
        total += n
    if total == 0 and os.fstat(src).st_size > 0:  # some kernels copy 0 bytes between some file systems
        return None
    return total


def _copy_hashing(src: io.FileIO, dst: IO[bytes]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    while n := src.readinto(view):
        digest.update(view[:n])
        dst.write(view[:n])
    return base64.b64encode(digest.digest()).decode()


def _info(bucket: str, name: str, st: os.stat_result, md5: str | None) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket, name=name, generation=st.st_mtime_ns, size=st.st_size, md5=md5,
        updated=datetime.fromtimestamp(st.st_mtime, UTC), content_encoding="gzip" if name.endswith(".gz") else None,
    )


def _md5(path: Path) -> str:
    with path.open("rb") as fh:
        return _mapped_md5(fh.fileno(), os.fstat(fh.fileno()).st_size)
