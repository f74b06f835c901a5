"""The semi-structured read stage, and the job aggregate's concurrency and idempotency guarantees."""

from __future__ import annotations

import io
import threading

import pytest
from sqlalchemy import select, text

from database import jobs
from database.job_models import Job
from database.tenancy import tenant_session
from pipeline.staging_rows import StagingSourceError, read_records
from tests.tenancy.conftest import bearer, declare


def records(data: bytes, fmt: str, **kwargs):
    return [(r.row, r.payload, r.errors) for r in read_records(io.BytesIO(data), format=fmt, name="f", **kwargs)]


def test_csv_rows_keep_strings_numbers_and_problems() -> None:
    data = b'id,note\n1,"two\nlines"\n\n2\n3,\n4,"x",extra\n'
    assert records(data, "csv", column_map={"id": "key"}, required=["key", "note"]) == [
        (1, {"key": "1", "note": "two\nlines"}, []),
        (2, {"_raw": ["2"]}, [{"error": "expected 2 fields, found 1"}]),
        (3, {"key": "3", "note": ""}, [{"column": "note", "error": "required value is missing"}]),
        (4, {"_raw": ["4", "x", "extra"]}, [{"error": "expected 2 fields, found 3"}]),
    ]
    assert records(b"a;b\n1;2\n", "csv", options={"delimiter": ";"}) == [(1, {"a": "1", "b": "2"}, [])]
    assert records(b"", "csv") == []


def test_ndjson_rows_are_numbered_by_non_blank_line() -> None:
    data = b'{"a": 1, "n": {"x": [1, 2]}}\n\n[1]\n{bad\n{"a": 2}\n'
    assert records(data, "ndjson", column_map={"a": "b"}) == [
        (1, {"b": 1, "n": {"x": [1, 2]}}, []),
        (2, {"_raw": [1]}, [{"error": "line is not a JSON object"}]),
        (3, {"_raw": "{bad"}, [{"error": "invalid JSON: Expecting property name enclosed in double quotes: "
                                          "line 1 column 2 (char 1)"}]),
        (4, {"b": 2}, []),
    ]


def test_unreadable_files_raise_permanent_errors() -> None:
    for data, fmt, opts in ((b"a,a\n1,2\n", "csv", {}), (b"a,\n1,2\n", "csv", {}), (b"\xff\xfe\n", "ndjson", {}),
                            (b"a\n", "csv", {"encoding": "nope"}), (b"a\n", "parquet", {})):
        with pytest.raises(StagingSourceError):
            records(data, fmt, options=opts)


def test_row_checksum_ignores_key_order() -> None:
    [a] = list(read_records(io.BytesIO(b'{"x": 1, "y": 2}\n'), format="ndjson", name="f"))
    [b] = list(read_records(io.BytesIO(b'{"y": 2, "x": 1}\n'), format="ndjson", name="f"))
    assert a.checksum == b.checksum and len(a.checksum) == 64


def test_concurrent_declarations_of_one_file_set_share_one_job(deps) -> None:
    files = [jobs.DeclaredFile("a.csv", jobs.normalize_checksum("0" * 64), 1, "text/csv")]
    results: list[object] = []
    barrier = threading.Barrier(6)

    def declare_once() -> None:
        barrier.wait()
        with tenant_session(deps.sessions, "tenant_a") as session:
            job, _ = jobs.open_job(session=session, tenant_id="tenant_a", requested_by="t", files=files,
                                   bucket="uploads")
            results.append(job.id)

    threads = [threading.Thread(target=declare_once) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1
    with deps.sessions() as session:
        assert session.scalar(select(Job.status).where(Job.id == results[0])) == "open"


def test_checksum_declarations_are_normalised() -> None:
    md5_hex = "9e107d9d372bb6826bd81d3542a419d6"
    import base64

    assert jobs.normalize_checksum(f"MD5:{md5_hex.upper()}") == f"md5:{md5_hex}"
    assert jobs.normalize_checksum(base64.b64encode(bytes.fromhex(md5_hex)).decode().join(["md5:", ""])) \
        == f"md5:{md5_hex}"
    assert jobs.normalize_checksum("a" * 64) == "sha256:" + "a" * 64
    for bad in ("sha1:" + "a" * 40, "sha256:xyz", "", "md5:" + "a" * 31):
        with pytest.raises(jobs.InvalidDeclaration):
            jobs.normalize_checksum(bad)


def test_finalizing_a_canceled_job_is_a_conflict(deps, client) -> None:
    answer = client.post("/jobs", json={"files": [declare("a.csv", b"x")]}, headers=bearer("token-a")).get_json()
    with deps.engine.begin() as conn:
        conn.execute(text("UPDATE job SET status = 'canceled' WHERE id = :j"), {"j": answer["job_id"]})
    response = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a"))
    assert response.status_code == 409
