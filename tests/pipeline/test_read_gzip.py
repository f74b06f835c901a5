"""Gzip under every text format: what gzip.GzipFile accepts reads the same; what it refuses is one line."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.read import read_batches
from pipeline.readers.streams import GzipGuard
from pipeline.source import SourceError, SourceOptions


def read_all(data: bytes, fmt: str = "csv", **options: Any) -> list[dict[str, Any]]:
    batches = read_batches(io.BytesIO(data), SourceOptions(format=fmt, gzip=True, **options), name="f.gz")
    return [row for b in batches for row in b.data.to_pylist()]


def inflate(data: bytes, size: int, limit: int = 1 << 40) -> bytes:
    guard = GzipGuard(io.BytesIO(data), limit=limit, name="f.gz")  # type: ignore[arg-type]
    return b"".join(iter(lambda: guard.read(size), b""))


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=4), padding=st.lists(st.integers(0, 3)),
       size=st.integers(1, 5000), level=st.integers(0, 9))
def test_members_and_zero_padding_read_as_gzip_reads_them(parts: list[bytes], padding: list[int], size: int,
                                                          level: int) -> None:
    data = b"".join(gzip.compress(p, compresslevel=level) + b"\0" * (padding[i] if i < len(padding) else 0)
                    for i, p in enumerate(parts))
    assert inflate(data, size) == gzip.decompress(data) == b"".join(parts)


def test_large_content_crosses_many_input_chunks() -> None:
    content = b"".join(b"%d,row number %d\n" % (i, i * 7) for i in range(300_000))  # ~6 MB, ~1 MB compressed
    data = gzip.compress(content, compresslevel=1)
    assert inflate(data, 1 << 20) == content
    assert inflate(data, 8 << 20) == content


def test_multi_member_file_reads_as_one_csv_and_ndjson() -> None:
    csv = gzip.compress(b"a,b\n1,x\n") + gzip.compress(b"2,y\n") + b"\0\0\0"
    assert read_all(csv) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    ndjson = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"a": 2}\n')
    assert read_all(ndjson, "ndjson") == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("cut", [1, 5, 11, 40, -8, -4, -1])
def test_a_truncated_file_is_one_line_error(cut: int) -> None:
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 5000)
    with pytest.raises(SourceError, match=r"^f.gz: gzip stream is truncated/corrupt") as failure:
        read_all(data[:cut])
    assert "\n" not in str(failure.value)


@pytest.mark.parametrize("damage", ["crc", "length", "header", "garbage after", "not gzip", "zeros only"])
def test_a_corrupt_file_is_one_line_error(damage: str) -> None:
    content = b"a,b\n" + b"1,2\n" * 5000
    data = gzip.compress(content)
    bad = {"crc": data[:-8] + bytes(4) + data[-4:],
           "length": data[:-4] + b"\1\0\0\0",
           "header": b"\x1f\x8b\x09" + data[3:],
           "garbage after": data + b"garbage",
           "not gzip": content,
           "zeros only": bytes(100)}[damage]
    with pytest.raises(SourceError, match=r"^f.gz: gzip stream is truncated/corrupt") as failure:
        read_all(bad)
    assert "\n" not in str(failure.value)
    with pytest.raises((OSError, EOFError, zlib.error)):  # gzip itself refuses each of them too
        gzip.decompress(bad)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_a_gzip_bomb_is_refused_before_it_is_inflated(fmt: str) -> None:
    bomb = gzip.compress(b"a\n" + b"0\n" * (20 << 20), compresslevel=9)  # 40 MB from ~40 KB
    guard = GzipGuard(io.BytesIO(bomb), limit=1 << 20, name="f.gz")  # type: ignore[arg-type]
    inflated = 0
    with pytest.raises(SourceError, match=r"decompressed size exceeds 1048576 bytes"):
        while piece := guard.read(256 << 10):
            inflated += len(piece)
    assert inflated <= 1 << 20
    with pytest.raises(SourceError, match=r"decompressed size exceeds 1048576 bytes"):
        read_all(bomb, fmt, max_decompressed_bytes=1 << 20)


def test_empty_file_and_empty_member_read_as_empty(tmp_path: Path) -> None:
    assert inflate(b"", 100) == b""
    assert inflate(gzip.compress(b""), 100) == b""
    with pytest.raises(SourceError, match="file is empty"):
        read_all(b"", "ndjson")
