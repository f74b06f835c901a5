"""Byte-stream layers under the readers: gzip with a size guard, validated UTF-8, seekable spooling."""

from __future__ import annotations

import codecs
import contextlib
import io
import shutil
import tempfile
import threading
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from pipeline.source import SourceError, SourceOptions

_BOM = codecs.BOM_UTF8
_CHUNK = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip member: header, deflate data, CRC-32 and length checked by zlib
_GZIP_INPUT = 64 << 10  # compressed bytes read at a time
_GZIP_OUTPUT = 64 << 10  # bytes inflated per zlib call


class _RawReader(io.RawIOBase):
    """A read-only stream built from `read(n)`; `readinto` for the io machinery."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError


class GzipGuard(_RawReader):
    """Stream-decompress gzip; refuse more than `limit` decompressed bytes (gzip bombs).

    zlib inflates (and checks each member's CRC and length) in C with the GIL released, fed
    `_GZIP_INPUT` compressed bytes at a time and asked for `_GZIP_OUTPUT` bytes per call; each
    `read(size)` returns up to `size` bytes in one piece. The small pieces (and unconsumed input
    tails) stay under glibc's mmap threshold, which the handler pins at 128 KiB: inflating 2 MiB
    per call made zlib's growing output buffers mmaps of their own, +0.6 s CPU for the 35 MB
    benchmark file. Read as `gzip.GzipFile` reads: members one after another, zero bytes padding
    between or after them; a stream that ends inside a member is truncated.
    """

    def __init__(self, raw: BinaryIO, *, limit: int, name: str) -> None:
        self._raw = raw
        self._limit = limit
        self._name = name
        self._member = zlib.decompressobj(_GZIP_WBITS)
        self._input = b""  # compressed bytes read and not yet inflated
        self._in_member = False  # the current member has started
        self._members = 0  # members read to their end
        self._eof = False
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        pieces: list[bytes] = []
        have = 0
        while have < size and not self._eof:
            piece = self._inflate(size - have)
            pieces.append(piece)
            have += len(piece)
        self.total += have
        if self.total > self._limit:
            raise SourceError(f"{self._name}: decompressed size exceeds {self._limit} bytes "
                              "(max_decompressed_bytes); refusing to read further")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _inflate(self, size: int) -> bytes:
        at_end = False
        if not self._input:
            self._input = self._raw.read(_GZIP_INPUT)
            at_end = not self._input
            if at_end and not self._in_member:
                self._eof = True
                return b""
        if self._members and not self._in_member:
            self._input = self._input.lstrip(b"\0")  # padding after a member, as gzip.GzipFile allows
            if not self._input:
                return b""
        self._in_member = True
        try:
            out = self._member.decompress(self._input, min(size, _GZIP_OUTPUT))
        except zlib.error as exc:
            raise SourceError(f"{self._name}: gzip stream is truncated/corrupt: {exc}") from exc
        if self._member.eof:
            self._input = self._member.unused_data
            self._member = zlib.decompressobj(_GZIP_WBITS)
            self._in_member = False
            self._members += 1
        elif at_end and not out:
            raise SourceError(f"{self._name}: gzip stream is truncated/corrupt: it ends before the "
                              "end-of-stream marker")
        else:
            self._input = self._member.unconsumed_tail
        return out


def newlines(data: bytes, scratch: np.ndarray | None = None) -> int:
    """The number of b"\\n" in `data` (numpy compares 16+ bytes at a time: ~6x `bytes.count`).

    `scratch`, a bool array at least as long, receives the comparison: a fresh one per 2 MiB chunk
    would be an mmap of its own, page-faulted and unmapped (the handler pins glibc's mmap threshold).
    """
    view = np.frombuffer(data, dtype=np.uint8)
    out = None if scratch is None or len(scratch) < len(view) else scratch[: len(view)]
    return int(np.count_nonzero(np.equal(view, 10, out=out)))


def open_bytes(stream: BinaryIO, options: SourceOptions, name: str) -> BinaryIO:
    """The file's content bytes: decompressed when `options.gzip`."""
    if options.gzip:
        return GzipGuard(stream, limit=options.max_decompressed_bytes, name=name)  # type: ignore[return-value]
    return stream


class Utf8Stream(_RawReader):
    """The content as validated UTF-8 bytes, transcoded from `encoding` when needed.

    Invalid bytes and NUL bytes (binary files) raise `SourceError` with the line and byte offset.
    A UTF-8 byte order mark is dropped. `trailer` is appended after the last byte (the CSV
    reader's end-of-file sentinel). A 0-byte content raises "file is empty".
    """

    def __init__(self, src: BinaryIO, *, encoding: str, name: str, what: str, trailer: bytes = b"") -> None:
        try:
            codec = codecs.lookup(encoding)
        except LookupError as exc:
            raise SourceError(f"{name}: unknown encoding {encoding!r} in the table definition") from exc
        self._src = src
        self._name = name
        self._what = what
        self._encoding = encoding
        self._passthrough = codec.name in ("utf-8", "utf-8-sig")
        self._decoder = codec.incrementaldecoder("strict")
        self._trailer = trailer
        self._pending = b""
        self._eof = False
        self._offset = 0  # source bytes consumed
        self._lines = 0  # newlines in the consumed source bytes
        self._scratch = np.empty(0, dtype=bool)  # for `newlines`, reused from chunk to chunk
        self._lock = threading.Lock()
        self._detached = False

    def detach(self) -> None:
        """Stop reading the source (pyarrow may still call `read` from its read-ahead thread)."""
        with self._lock:
            self._detached = True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        with self._lock:
            if self._detached:
                return b""
            return self._read(size)

    def _read(self, size: int) -> bytes:
        while len(self._pending) < size and not self._eof:
            self._fill(max(size - len(self._pending), 1))
        if len(self._pending) <= size:  # the common case: hand the chunk over without copying
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def _fill(self, size: int) -> None:
        chunk = self._src.read(size)
        if not chunk:
            self._eof = True
            if self._offset == 0:
                raise SourceError(f"{self._name}: file is empty")
            self._pending += self._decode(b"", final=True) + self._trailer
            return
        if self._offset == 0 and self._passthrough and chunk.startswith(_BOM):
            self._offset, chunk = len(_BOM), chunk[len(_BOM):]
        self._pending += self._decode(chunk, final=False)
        self._offset += len(chunk)
        if len(self._scratch) < len(chunk):
            self._scratch = np.empty(len(chunk), dtype=bool)
        self._lines += newlines(chunk, self._scratch)

    def _decode(self, chunk: bytes, *, final: bool) -> bytes:
        buffered = self._decoder.getstate()[0]
        if self._passthrough and not buffered and chunk.isascii():
            if b"\x00" in chunk:
                self._nul(chunk)
            return chunk
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            seen = (buffered + chunk)[: exc.start]
            offset = self._offset - len(buffered) + exc.start
            line = self._lines - buffered.count(b"\n") + seen.count(b"\n") + 1
            if self._passthrough:
                raise SourceError(
                    f"{self._name}: file is not valid UTF-8 near line {line} (byte offset {offset}); set "
                    "csv.encoding in the table definition (e.g. latin-1)") from exc
            raise SourceError(f"{self._name}: file is not valid {self._encoding} near line {line} (byte offset "
                              f"{offset}); check csv.encoding in the table definition") from exc
        out = chunk if self._passthrough else text.encode("utf-8")
        if b"\x00" in out:
            self._nul(out)
        return out

    def _nul(self, out: bytes) -> None:
        line = self._lines + out[: out.index(b"\x00")].count(b"\n") + 1
        raise SourceError(
            f"{self._name}: file contains a NUL byte near line {line}: it looks like a binary file, not "
            f"{self._what} text (for UTF-16 text set csv.encoding: utf-16)")


@contextlib.contextmanager
def seekable(stream: BinaryIO, options: SourceOptions, name: str) -> Iterator[BinaryIO]:
    """The content as a seekable file at position 0: the stream itself, or a spooled temporary copy."""
    if not options.gzip and _is_seekable(stream):
        start = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(start)
        if end <= start:
            raise SourceError(f"{name}: file is empty")
        yield stream
        return
    with tempfile.TemporaryFile(prefix="caf-source-") as tmp:
        shutil.copyfileobj(open_bytes(stream, options, name), tmp, _CHUNK)
        if tmp.tell() == 0:
            raise SourceError(f"{name}: file is empty")
        tmp.seek(0)
        yield tmp  # type: ignore[misc]


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def start_position(stream: BinaryIO) -> int | None:
    """Where the stream is now, if it can be re-read from there (None otherwise)."""
    if not _is_seekable(stream):
        return None
    try:
        return stream.tell()
    except OSError:
        return None
