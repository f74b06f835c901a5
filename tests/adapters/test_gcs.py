"""GcsStorage against gcp-storage-emulator running in-process (the real google-cloud-storage client).

The emulator ignores `generation` and the `if*GenerationMatch` preconditions; where the adapter
relies on the server enforcing them, a stub client stands in (see the last tests).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from adapters.storage.base import ObjectNotFound, ObjectStorage
from adapters.storage.gcs import GcsStorage
from errors import PermanentError, TransientError
from tests.wire.emulators import gcs_emulator

BUCKET = "landing"


@pytest.fixture(scope="module")
def emulator():
    saved = dict(os.environ)
    try:
        with gcs_emulator(BUCKET) as url:
            yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def gcs(emulator):
    # A 4-byte chunk size makes every read below span several ranged GETs.
    storage = GcsStorage(project="caf-test", emulator_host=emulator, chunk_size=4)
    yield storage
    storage.close()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_is_an_object_storage(gcs):
    port: ObjectStorage = gcs
    assert port.uri(BUCKET, "in/a b.csv") == "gs://landing/in/a b.csv"
    assert port.local_path(BUCKET, "x") is None


def test_client_is_built_lazily_without_touching_environ(emulator):
    before = dict(os.environ)
    storage = GcsStorage(project="caf-test", emulator_host=emulator)
    assert storage._client is None
    storage.put_bytes(BUCKET, "lazy.txt", b"x")
    assert storage._client is not None
    assert dict(os.environ) == before


def test_emulator_host_must_be_http():
    with pytest.raises(PermanentError, match="http://"):
        GcsStorage(emulator_host="127.0.0.1:9023")


def test_put_bytes_then_stat(gcs):
    data = b"id,name\n1,x\n"
    info = gcs.put_bytes(BUCKET, "in/a.csv", data, content_type="text/csv")
    assert (info.bucket, info.name, info.size, info.md5) == (BUCKET, "in/a.csv", len(data), _md5(data))
    assert info.generation > 0
    stat = gcs.stat(BUCKET, "in/a.csv")
    assert (stat.size, stat.md5, stat.generation, stat.content_type) == (len(data), _md5(data),
                                                                          info.generation, "text/csv")
    assert stat.crc32c and stat.updated is not None


def test_put_file_then_stat(gcs, tmp_path: Path):
    path = tmp_path / "f.bin"
    data = os.urandom(70_000)
    path.write_bytes(data)
    info = gcs.put_file(BUCKET, "in/f.bin", path)
    assert (info.size, info.md5) == (len(data), _md5(data))
    assert gcs.stat(BUCKET, "in/f.bin").generation == info.generation


def test_put_file_given_up_is_uploaded_and_left_in_place(gcs, tmp_path: Path):
    path = tmp_path / "staged.parquet"
    path.write_bytes(b"PAR1 staged")
    info = gcs.put_file(BUCKET, "_staging/s.parquet", path, move=True)
    assert info.md5 == _md5(b"PAR1 staged") and path.read_bytes() == b"PAR1 staged"  # the caller's file stays


def test_put_file_missing_source_is_permanent(gcs, tmp_path: Path):
    with pytest.raises(PermanentError, match="no such file"):
        gcs.put_file(BUCKET, "in/nope", tmp_path / "missing")


def test_stat_missing_object(gcs):
    with pytest.raises(ObjectNotFound, match="gs://landing/nope"):
        gcs.stat(BUCKET, "nope")


def test_open_read_streams_in_ranged_chunks(gcs, monkeypatch):
    data = bytes(range(256)) * 3 + b"tail"
    info = gcs.put_bytes(BUCKET, "in/stream.bin", data)
    calls = []
    from google.cloud.storage import Blob

    real = Blob.download_as_bytes

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("start"), kwargs.get("end"), self.generation))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Blob, "download_as_bytes", spy)
    with gcs.open_read(BUCKET, "in/stream.bin", info.generation) as fh:
        first = fh.read(10)
        rest = fh.read()
    assert first + rest == data
    assert len(calls) > 1, "the object must be fetched in ranges, not in one GET"
    assert all(end - start + 1 <= len(data) for start, end, _ in calls)
    assert {gen for _, _, gen in calls} == {info.generation}
    assert calls[-1][1] == len(data) - 1  # stops at the known size: no read past the end


def test_open_read_line_iteration_and_empty_object(gcs):
    gcs.put_bytes(BUCKET, "in/lines.txt", "a\nbé\nc".encode())
    with gcs.open_read(BUCKET, "in/lines.txt") as fh:
        assert list(io.TextIOWrapper(fh, encoding="utf-8")) == ["a\n", "bé\n", "c"]
    gcs.put_bytes(BUCKET, "in/empty", b"")
    with gcs.open_read(BUCKET, "in/empty") as fh:
        assert fh.read() == b""


def test_open_read_missing_object(gcs):
    with pytest.raises(ObjectNotFound):
        gcs.open_read(BUCKET, "in/never")


def test_old_generation_after_overwrite_is_gone(gcs):
    old = gcs.put_bytes(BUCKET, "in/v.csv", b"version 1")
    new = gcs.put_bytes(BUCKET, "in/v.csv", b"version 2")
    assert new.generation != old.generation
    with pytest.raises(ObjectNotFound, match=str(old.generation)):
        gcs.open_read(BUCKET, "in/v.csv", old.generation)
    with gcs.open_read(BUCKET, "in/v.csv", new.generation) as fh:
        assert fh.read() == b"version 2"


def test_move_current_generation(gcs):
    info = gcs.put_bytes(BUCKET, "in/m.csv", b"move me")
    uri = gcs.move(BUCKET, "in/m.csv", "done/m.csv", info.generation)
    assert uri == "gs://landing/done/m.csv"
    with pytest.raises(ObjectNotFound):
        gcs.stat(BUCKET, "in/m.csv")
    with gcs.open_read(BUCKET, "done/m.csv") as fh:
        assert fh.read() == b"move me"


def test_move_without_generation(gcs):
    gcs.put_bytes(BUCKET, "in/m2.csv", b"x")
    assert gcs.move(BUCKET, "in/m2.csv", "done/m2.csv") == "gs://landing/done/m2.csv"
    assert [o.name for o in gcs.list(BUCKET, "in/m2")] == []


def test_move_generation_mismatch_leaves_newer_version(gcs):
    old = gcs.put_bytes(BUCKET, "in/race.csv", b"v1")
    gcs.put_bytes(BUCKET, "in/race.csv", b"v2")
    assert gcs.move(BUCKET, "in/race.csv", "done/race.csv", old.generation) is None
    with gcs.open_read(BUCKET, "in/race.csv") as fh:
        assert fh.read() == b"v2"
    with pytest.raises(ObjectNotFound):
        gcs.stat(BUCKET, "done/race.csv")


def test_move_missing_object_returns_none(gcs):
    assert gcs.move(BUCKET, "in/ghost.csv", "done/ghost.csv") is None
    assert gcs.move(BUCKET, "in/ghost.csv", "done/ghost.csv", 123) is None


def test_list_with_prefix(gcs):
    for name in ("lst/a/1.csv", "lst/a/2.csv", "lst/b/1.csv"):
        gcs.put_bytes(BUCKET, name, name.encode())
    assert [o.name for o in gcs.list(BUCKET, "lst/a/")] == ["lst/a/1.csv", "lst/a/2.csv"]
    assert len(gcs.list(BUCKET, "lst/")) == 3
    assert all(o.size == len(o.name) and o.generation for o in gcs.list(BUCKET, "lst/"))
    assert gcs.list(BUCKET, "lst/zzz") == []


def test_delete_is_idempotent(gcs):
    gcs.put_bytes(BUCKET, "in/d.csv", b"x")
    gcs.delete(BUCKET, "in/d.csv")
    with pytest.raises(ObjectNotFound):
        gcs.stat(BUCKET, "in/d.csv")
    gcs.delete(BUCKET, "in/d.csv")


@pytest.mark.parametrize(
    "name", ["in/with space.csv", "in/ünïcødé €.csv", "in/a+b&c=d?.csv", "in/日本/データ.csv", "in/%41.csv"]
)
def test_names_with_spaces_and_unicode(gcs, name):
    data = name.encode()
    info = gcs.put_bytes(BUCKET, name, data)
    assert gcs.stat(BUCKET, name).md5 == _md5(data)
    with gcs.open_read(BUCKET, name, info.generation) as fh:
        assert fh.read() == data
    assert name in [o.name for o in gcs.list(BUCKET, "in/")]
    target = name.replace("in/", "done/", 1)
    assert gcs.move(BUCKET, name, target, info.generation) == f"gs://{BUCKET}/{target}"
    gcs.delete(BUCKET, target)
    with pytest.raises(ObjectNotFound):
        gcs.stat(BUCKET, target)


def test_missing_bucket(gcs):
    with pytest.raises(ObjectNotFound):
        gcs.stat("no-such-bucket", "x")


# -- what the emulator cannot show: server-side preconditions and error statuses -----------
class _StubBlob:
    def __init__(self, bucket, name, generation=None, *, error=None, delete_error=None):
        self.bucket, self.name, self.generation = bucket, name, generation
        self._error, self._delete_error = error, delete_error
        self.deleted_with = None

    def delete(self, **kwargs):
        self.deleted_with = kwargs
        if self._delete_error:
            raise self._delete_error


class _StubBucket:
    """Just enough of google.cloud.storage.Bucket for move() and stat()."""

    def __init__(self, *, current_generation=7, copy_error=None, delete_error=None, get_error=None):
        self.name = BUCKET
        self.current_generation = current_generation
        self.copy_error, self.delete_error, self.get_error = copy_error, delete_error, get_error
        self.copies = []
        self.deleted = []

    def get_blob(self, name, generation=None):
        if self.get_error:
            raise self.get_error
        return _StubBlob(self, name, self.current_generation)

    def blob(self, name, generation=None):
        blob = _StubBlob(self, name, generation, delete_error=self.delete_error)
        self.deleted.append(blob)
        return blob

    def copy_blob(self, blob, bucket, new_name, **kwargs):
        self.copies.append((blob.name, new_name, kwargs))
        if self.copy_error:
            raise self.copy_error


class _StubClient:
    def __init__(self, bucket):
        self._bucket = bucket

    def bucket(self, name):
        return self._bucket


def test_move_sends_generation_preconditions():
    bucket = _StubBucket(current_generation=7)
    assert GcsStorage(client=_StubClient(bucket)).move(BUCKET, "a", "b", 7) == "gs://landing/b"
    assert bucket.copies == [("a", "b", {"source_generation": 7, "if_source_generation_match": 7})]
    assert bucket.deleted[-1].deleted_with == {"if_generation_match": 7}


def test_move_precondition_failed_on_copy_returns_none():
    bucket = _StubBucket(copy_error=gexc.PreconditionFailed("conditionNotMet"))
    assert GcsStorage(client=_StubClient(bucket)).move(BUCKET, "a", "b", 7) is None


def test_move_precondition_failed_on_delete_keeps_copy():
    bucket = _StubBucket(delete_error=gexc.PreconditionFailed("newer version"))
    assert GcsStorage(client=_StubClient(bucket)).move(BUCKET, "a", "b", 7) == "gs://landing/b"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (gexc.ServiceUnavailable("down"), TransientError),
        (gexc.TooManyRequests("slow down"), TransientError),
        (gexc.InternalServerError("oops"), TransientError),
        (gexc.GatewayTimeout("late"), TransientError),
        (ConnectionResetError("reset"), TransientError),
        (gexc.Forbidden("caller lacks storage.objects.get"), PermanentError),
        (gexc.BadRequest("bad"), PermanentError),
        (gexc.NotFound("no bucket"), ObjectNotFound),
    ],
)
def test_error_translation(error, kind):
    storage = GcsStorage(client=_StubClient(_StubBucket(get_error=error)))
    with pytest.raises(kind) as info:
        storage.stat(BUCKET, "obj.csv")
    assert "gs://landing/obj.csv" in str(info.value)
    if kind is PermanentError:
        assert not isinstance(info.value, TransientError)
