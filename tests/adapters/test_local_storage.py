"""The local bucket adapter: a file given up is renamed into the bucket, not copied."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from pathlib import Path

import pytest

from adapters.storage.local import LocalStorage


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def test_a_file_given_up_is_renamed_into_the_bucket_and_stats_like_a_copied_one(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    staged = tmp_path / "work" / "staged.parquet"
    staged.parent.mkdir()
    staged.write_bytes(b"PAR1 rows")
    inode = staged.stat().st_ino
    info = storage.put_file("landing", "_staging/t/1-7.parquet", staged, move=True)
    target = storage.local_path("landing", "_staging/t/1-7.parquet")
    assert target is not None and target.stat().st_ino == inode and not staged.exists()  # no copy made
    assert (info.size, info.md5) == (9, None)  # not read to hash it
    stat = storage.stat("landing", "_staging/t/1-7.parquet")
    assert (stat.md5, stat.generation) == (md5(b"PAR1 rows"), info.generation)


def test_across_file_systems_a_file_given_up_is_copied(tmp_path: Path, monkeypatch) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(b"PAR1 rows")
    real_replace = os.replace

    def cross_device(src, dst):  # what rename(2) answers when /tmp is another file system
        if Path(src) == staged:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", cross_device)
    info = storage.put_file("landing", "_staging/s.parquet", staged, move=True)
    assert info.md5 == md5(b"PAR1 rows")
    assert storage.local_path("landing", "_staging/s.parquet").read_bytes() == b"PAR1 rows"


def test_any_other_rename_failure_is_raised(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    with pytest.raises(FileNotFoundError):
        storage.put_file("landing", "x.parquet", tmp_path / "missing.parquet", move=True)
