"""Hostile staged rows through the jobs API: row validation errors, never a job stuck `ingesting`.

Each file goes through the real `operator` app (declare, signed PUT, finalize) into the real
embedded Postgres. A row Postgres could not store as JSONB (NUL, non-finite number, lone
surrogate, excessive nesting) is staged with a validation error; an unexpected failure while
staging marks that file failed and the job still ends; no row value ever reaches a log line.
"""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select

from database.job_models import JobFile, StagingRow
from database.session import unit_of_work
from tests.tenancy.conftest import bearer, declare, upload

MARKER = "Secret-Row-Value-4711"


def run_job(client, seed: dict[str, tuple[bytes, str]], token: str = "token-a") -> dict:
    answer = client.post("/jobs", json={"files": [declare(n, d, t) for n, (d, t) in seed.items()]},
                         headers=bearer(token)).get_json()
    for name, (data, _) in seed.items():
        assert upload(client, answer, name, data).status_code == 200
    response = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()


def staged(deps, job_id: str) -> list[StagingRow]:
    with unit_of_work(deps.sessions) as session:
        return list(session.scalars(select(StagingRow).where(StagingRow.job_id == job_id)
                                    .order_by(StagingRow.job_file_id, StagingRow.source_row_num)))


HOSTILE_NDJSON = {
    "nul_in_value": (b'{"id": "a\\u0000b"}\n', "NUL"),
    "nul_in_key": (b'{"i\\u0000d": "x", "id": "1"}\n', "NUL"),
    "raw_nul_byte": (b'{"id": "a\x00b"}\n', "invalid JSON"),
    "huge_number": (b'{"id": "1", "n": 1e999}\n', "not a finite number"),
    "nan": (b'{"id": "1", "n": NaN}\n', "not a finite number"),
    "infinity": (b'{"id": "1", "n": -Infinity}\n', "not a finite number"),
    "lone_surrogate": (b'{"id": "\\ud800"}\n', "surrogate"),
    "surrogate_key": (b'{"\\udfff": 1, "id": "1"}\n', "surrogate"),
    "nested_100k": (b'{"id": "1", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested"),
    "nested_deep_object": (b'{"id": "1", "n": ' + b'{"a": ' * 500 + b"1" + b"}" * 500 + b"}\n", "nested"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NDJSON))
def test_hostile_ndjson_rows_become_validation_errors(deps, client, entities, case: str) -> None:
    line, reason = HOSTILE_NDJSON[case]
    data = b'{"customer_id": "c1", "name": "Ada"}\n' + line + b'{"customer_id": "c3"}\n'
    view = run_job(client, {"crm/customers/x.ndjson": (data, "application/x-ndjson")})
    assert view["status"] == "done" and view["error"] is None, view
    assert view["files"][0]["staged"] == {"rows": 3, "rows_with_errors": 1}
    rows = staged(deps, view["job_id"])
    assert [r.source_row_num for r in rows] == [1, 2, 3]
    assert rows[0].payload == {"id": "c1", "name": "Ada"} and rows[2].payload == {"id": "c3"}
    errors = rows[1].validation_errors
    assert any(reason in e["error"] for e in errors), errors
    assert len(json.dumps(rows[1].payload)) < 300_000
    # finalizing again changes nothing and still answers
    again = client.post(f"/jobs/{view['job_id']}/finalize", headers=bearer("token-a"))
    assert again.status_code == 200 and again.get_json()["status"] == "done"
    assert len(staged(deps, view["job_id"])) == 3


def test_csv_with_nul_in_a_value_is_a_row_error(deps, client, entities) -> None:
    data = b"Order ID,amount,note\n1,2,ok\n2,3,a\x00b\n3,4,fine\n"
    view = run_job(client, {"sales/orders/nul.csv": (data, "text/csv")})
    assert view["status"] == "done" and view["files"][0]["staged"] == {"rows": 3, "rows_with_errors": 1}
    rows = staged(deps, view["job_id"])
    assert [r.validation_errors == [] for r in rows] == [True, False, True]
    assert "NUL" in rows[1].validation_errors[0]["error"]
    assert "\x00" not in json.dumps(rows[1].payload)


def test_csv_with_nul_in_the_header_fails_that_file_with_a_clear_error(deps, client, entities) -> None:
    data = b"Order ID,amo\x00unt,note\n1,2,ok\n"
    view = run_job(client, {"sales/orders/nulhead.csv": (data, "text/csv"),
                            "crm/customers/good.ndjson": (b'{"customer_id": "c1"}\n', "application/x-ndjson")})
    files = {f["name"]: f for f in view["files"]}
    assert files["sales/orders/nulhead.csv"]["status"] == "failed"
    assert "header" in files["sales/orders/nulhead.csv"]["error"]
    assert "NUL" in files["sales/orders/nulhead.csv"]["error"]
    assert view["status"] == "done" and view["error"] == "1 of 2 file(s) failed"
    assert [r.provenance["file"]["name"] for r in staged(deps, view["job_id"])] == ["crm/customers/good.ndjson"]


def test_unexpected_failure_while_staging_fails_that_file_keeps_none_of_its_rows_and_logs_no_row_data(
        deps, client, entities, monkeypatch, caplog) -> None:
    """Fault injection: the row check is switched off, so Postgres itself refuses the row midway
    through the file (after a full chunk of good rows was written): that file fails with none of
    its rows kept, the other file of the job is staged, the job ends, and no log line carries row
    data (engines are created with hide_parameters=True)."""
    from app.deps import Deps, set_deps
    from database import jobs
    from pipeline import staging_rows

    monkeypatch.setattr(staging_rows, "storable_problem", lambda payload: None)
    own = Deps(deps.settings, clock=deps.clock, publisher=deps.publisher)  # engine built by production code
    previous = set_deps(own)
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in ("sqlalchemy.engine", "caf")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        from tests.conftest import make_client

        app = make_client("operator", "http")
        good = b"".join(b'{"customer_id": "g%d", "v": "%s"}\n' % (i, MARKER.encode()) for i in range(3))
        bad = b"".join(b'{"customer_id": "r%d", "v": "%s"}\n' % (i, MARKER.encode())
                       for i in range(jobs.STAGING_CHUNK + 5))
        bad += b'{"customer_id": "x", "v": "' + MARKER.encode() + b'\\u0000"}\n'
        view = run_job(app, {"crm/customers/good.ndjson": (good, "application/x-ndjson"),
                             "crm/customers/bad.ndjson": (bad, "application/x-ndjson")})
        files = {f["name"]: f for f in view["files"]}
        assert files["crm/customers/bad.ndjson"]["status"] == "failed"
        assert "unexpected" in files["crm/customers/bad.ndjson"]["error"]
        assert MARKER not in files["crm/customers/bad.ndjson"]["error"]
        assert files["crm/customers/good.ndjson"]["status"] == "verified"
        assert view["status"] == "done" and view["error"] == "1 of 2 file(s) failed"
        rows = staged(deps, view["job_id"])
        assert {r.provenance["file"]["name"] for r in rows} == {"crm/customers/good.ndjson"} and len(rows) == 3
        with unit_of_work(deps.sessions) as session:
            assert session.scalar(select(JobFile.status).where(JobFile.name == "crm/customers/bad.ndjson")) \
                == "failed"
    finally:
        set_deps(previous)
        own.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert any("crm/customers/bad.ndjson" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)  # statements were logged
    leaks = [r.getMessage()[:200] for r in caplog.records
             if MARKER in r.getMessage() or (r.exc_info and MARKER in logging.Formatter().formatException(r.exc_info))]
    assert leaks == []


def test_every_engine_hides_parameters(settings) -> None:
    """The system engine and the tenant login role's engine (TENANT_DB_USER) alike."""
    from database.session import create_engine_for, create_tenant_engine

    engines = [create_engine_for(settings),
               create_tenant_engine(settings.model_copy(update={"tenant_db_user": "caf_tenant_login"}))]
    try:
        assert [e.hide_parameters for e in engines] == [True, True]
    finally:
        for engine in engines:
            engine.dispose()
