"""The local bucket adapter: a file given up is renamed into the bucket, not copied; a copy made ahead
(`caf ingest`) becomes the object only when published."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from pathlib import Path

import pytest

from adapters.storage.base import ObjectNotFound
from adapters.storage.local import LocalStorage, UnsafeObjectName


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


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_copy_made_ahead_is_not_the_object_until_published_and_a_discarded_one_leaves_nothing(
        tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    source = tmp_path / "day1.csv"
    source.write_bytes(b"id\n1\n")
    pending = storage.copy_in("landing", "sales/day1.csv", source)
    with pytest.raises(ObjectNotFound):
        storage.stat("landing", "sales/day1.csv")
    assert storage.list("landing") == []  # nor is its temporary file an object (a backfill would deliver it)
    info = pending.publish()
    assert (info.name, info.size, info.md5) == ("sales/day1.csv", 5, md5(b"id\n1\n"))
    assert storage.stat("landing", "sales/day1.csv") == info
    assert _files(tmp_path / "buckets") == ["landing/sales/day1.csv"]  # no copy left behind

    storage.copy_in("landing", "sales/day2.csv", source).discard()
    assert _files(tmp_path / "buckets") == ["landing/sales/day1.csv"]


def test_a_copy_published_after_another_version_is_the_newer_generation(tmp_path: Path) -> None:
    """Generations follow publication, as in GCS: a copy made earlier but published later wins,
    and an event for the version it replaced finds that version gone."""
    storage = LocalStorage(tmp_path / "buckets")
    (tmp_path / "a.csv").write_bytes(b"id\n1\n")
    (tmp_path / "b.csv").write_bytes(b"id\n2\n")
    early = storage.copy_in("landing", "t/x.csv", tmp_path / "a.csv")
    other = storage.put_file("landing", "t/x.csv", tmp_path / "b.csv")
    late = early.publish()
    assert late.generation > other.generation
    assert storage.open_read("landing", "t/x.csv", late.generation).read() == b"id\n1\n"
    with pytest.raises(ObjectNotFound):
        storage.open_read("landing", "t/x.csv", other.generation)


def test_a_file_larger_than_a_hash_window_is_copied_whole_with_its_md5(tmp_path: Path, monkeypatch) -> None:
    import mmap

    from adapters.storage import local

    monkeypatch.setattr(local, "_HASH_WINDOW", mmap.ALLOCATIONGRANULARITY)
    data = os.urandom(3 * mmap.ALLOCATIONGRANULARITY + 17)
    (tmp_path / "big.bin").write_bytes(data)
    storage = LocalStorage(tmp_path / "buckets")
    info = storage.put_file("landing", "big.bin", tmp_path / "big.bin")
    assert (info.size, info.md5) == (len(data), md5(data))
    assert storage.local_path("landing", "big.bin").read_bytes() == data


def test_a_pipe_or_a_system_without_a_kernel_copy_is_copied_with_its_md5(tmp_path: Path, monkeypatch) -> None:
    import threading

    data = os.urandom(3_000_017)
    storage = LocalStorage(tmp_path / "buckets")
    read_end, write_end = os.pipe()  # `caf ingest <(gunzip -c f.csv.gz)`: copy_file_range refuses a pipe

    def feed() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    info = storage.put_file("landing", "piped.bin", Path(f"/dev/fd/{read_end}"))
    feeder.join()
    os.close(read_end)
    assert (info.size, info.md5) == (len(data), md5(data))

    monkeypatch.delattr(os, "copy_file_range", raising=False)  # not Linux
    (tmp_path / "f.bin").write_bytes(data)
    info = storage.put_file("landing", "f.bin", tmp_path / "f.bin")
    assert (info.size, info.md5) == (len(data), md5(data))
    assert storage.local_path("landing", "f.bin").read_bytes() == data


def test_a_source_that_cannot_be_read_leaves_no_copy_behind(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    with pytest.raises(FileNotFoundError):
        storage.put_file("landing", "t/x.csv", tmp_path / "missing.csv")
    assert _files(tmp_path / "buckets") == []


def test_no_object_name_can_be_taken_for_a_write_in_progress(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "buckets")
    with pytest.raises(UnsafeObjectName, match="objects still being written"):
        storage.put_bytes("landing", "sales/.tmp-abc", b"x")
    storage.put_bytes("landing", "sales/.tmpfile/a.tmp-b", b"x")  # elsewhere in a name it is just text
    assert [o.name for o in storage.list("landing")] == ["sales/.tmpfile/a.tmp-b"]
