"""Upload jobs through the real `operator` app: open, signed uploads, finalize, staging lineage, isolation."""

from __future__ import annotations

import json
import urllib.parse

from sqlalchemy import func, select

from database.job_models import StagingRow
from database.session import unit_of_work
from tests.tenancy.conftest import bearer, declare, upload

CUSTOMERS = b'{"customer_id": "c1", "name": "Ada", "tags": ["vip"]}\n\n{"customer_id": "c2", "name": "Bob"}\n'
ORDERS = b"Order ID,amount,note\n1,10.5,first\n2,7,\n"
EVENTS = b"at\tkind\n2026-11-01T10:00:00Z\tclick\n2026-11-01T10:01:00Z\tview\n2026-11-01T10:02:00Z\tclick\n"
BAD_ORDERS = b'Order ID,amount,note\n,3,missing id\n4,5\n5,6,"ok"\n'

SEED = {"crm/customers/2026-11-01.ndjson": (CUSTOMERS, "application/x-ndjson"),
        "sales/orders/2026-11-01.csv": (ORDERS, "text/csv"),
        "web/2026-11-01.tsv": (EVENTS, "text/tab-separated-values")}


def open_seeded(client, token: str = "token-a", seed: dict = SEED):
    body = {"files": [declare(name, data, ctype) for name, (data, ctype) in seed.items()]}
    return client.post("/jobs", json=body, headers=bearer(token))


def upload_all(client, answer, seed: dict = SEED) -> None:
    for name, (data, _) in seed.items():
        response = upload(client, answer, name, data)
        assert response.status_code == 200, response.get_json()


def staged(deps, job_id: str) -> list[StagingRow]:
    with unit_of_work(deps.sessions) as session:
        return list(session.scalars(select(StagingRow).where(StagingRow.job_id == job_id)
                                    .order_by(StagingRow.job_file_id, StagingRow.source_row_num)))


def test_seeded_job_stages_rows_of_every_entity_with_file_and_row_lineage(deps, client, entities) -> None:
    created = open_seeded(client)
    assert created.status_code == 201
    answer = created.get_json()
    assert answer["status"] == "open" and answer["requested_by"].startswith("token:")
    assert {u["name"] for u in answer["uploads"]} == set(SEED)
    assert all(u["headers"]["Content-Type"] == SEED[u["name"]][1] for u in answer["uploads"])
    upload_all(client, answer)
    assert client.get(f"/jobs/{answer['job_id']}", headers=bearer("token-a")).get_json()["status"] == "uploading"

    done = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a"))
    assert done.status_code == 200
    view = done.get_json()
    assert view["status"] == "done", view
    assert [f["status"] for f in view["files"]] == ["verified"] * 3
    assert {f["name"]: f["staged"]["rows"] for f in view["files"]} == {
        "crm/customers/2026-11-01.ndjson": 2, "sales/orders/2026-11-01.csv": 2, "web/2026-11-01.tsv": 3}
    assert [a["type"] for a in view["artifacts"]] == ["summary"]

    rows = staged(deps, answer["job_id"])
    files = {f["id"]: f for f in view["files"]}
    by_entity: dict[str, list[StagingRow]] = {}
    for row in rows:
        by_entity.setdefault(row.provenance["entity"], []).append(row)
        source = files[row.job_file_id]
        assert row.tenant_id == "tenant_a"
        assert row.provenance["file"]["name"] == source["name"]
        assert row.provenance["file"]["checksum"] == source["checksum"]
        assert row.source_row_id == f"{source['name']}#{row.source_row_num}"
        assert row.validation_errors == []
    assert sorted(by_entity) == ["customers", "events", "orders"]
    customers = by_entity["customers"]
    assert [(r.source_row_num, r.payload) for r in customers] == [
        (1, {"id": "c1", "name": "Ada", "tags": ["vip"]}), (2, {"id": "c2", "name": "Bob"})]
    assert customers[0].provenance["column_map"] == {"customer_id": "id"}
    assert [(r.source_row_num, r.payload["order_id"], r.payload["amount"]) for r in by_entity["orders"]] == [
        (1, "1", "10.5"), (2, "2", "7")]
    assert [r.payload["kind"] for r in by_entity["events"]] == ["click", "view", "click"]


def test_refinalize_does_not_duplicate_staged_rows(deps, client, entities) -> None:
    answer = open_seeded(client).get_json()
    upload_all(client, answer)
    first = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a")).get_json()
    before = [(r.id, r.row_checksum) for r in staged(deps, answer["job_id"])]
    second = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a")).get_json()
    assert second["status"] == "done"
    assert [(r.id, r.row_checksum) for r in staged(deps, answer["job_id"])] == before
    assert len(before) == 7
    assert len(second["artifacts"]) == len(first["artifacts"]) == 1


def test_reopening_the_same_file_set_returns_the_open_job(client, deps) -> None:
    first = open_seeded(client)
    again = open_seeded(client)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert again.get_json()["reopened"] is True
    other = client.post("/jobs", json={"files": [declare("x/y.csv", b"a\n1\n")]}, headers=bearer("token-a"))
    assert other.status_code == 201 and other.get_json()["job_id"] != first.get_json()["job_id"]
    # the same file set from another tenant is another tenant's job
    theirs = open_seeded(client, token="token-b")
    assert theirs.status_code == 201 and theirs.get_json()["job_id"] != first.get_json()["job_id"]


def test_checksum_mismatch_fails_only_that_file(deps, client, entities) -> None:
    answer = open_seeded(client).get_json()
    upload_all(client, {**answer, "uploads": [u for u in answer["uploads"] if not u["name"].startswith("sales/")]},
               {k: v for k, v in SEED.items() if not k.startswith("sales/")})
    tampered = ORDERS.replace(b"10.5", b"99.9")  # same size, other bytes
    assert upload(client, answer, "sales/orders/2026-11-01.csv", tampered).status_code == 200

    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a")).get_json()
    files = {f["name"]: f for f in view["files"]}
    assert files["sales/orders/2026-11-01.csv"]["status"] == "failed"
    assert files["sales/orders/2026-11-01.csv"]["error"].startswith("sha256 mismatch: declared ")
    assert {n: f["status"] for n, f in files.items() if not n.startswith("sales/")} == {
        "crm/customers/2026-11-01.ndjson": "verified", "web/2026-11-01.tsv": "verified"}
    assert view["status"] == "done" and view["error"] == "1 of 3 file(s) failed"
    assert {r.provenance["entity"] for r in staged(deps, answer["job_id"])} == {"customers", "events"}


def test_size_mismatch_missing_upload_and_md5_declarations(deps, client, entities) -> None:
    body = {"files": [declare("sales/orders/a.csv", ORDERS, algo="md5"), declare("sales/orders/b.csv", ORDERS),
                      declare("sales/orders/c.csv", ORDERS)]}
    answer = client.post("/jobs", json=body, headers=bearer("token-a")).get_json()
    assert upload(client, answer, "sales/orders/a.csv", ORDERS).status_code == 200
    assert upload(client, answer, "sales/orders/b.csv", ORDERS + b"3,1,x\n").status_code == 413  # over the size
    assert upload(client, answer, "sales/orders/b.csv", ORDERS[:-6]).status_code == 200
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a")).get_json()
    files = {f["name"]: f for f in view["files"]}
    assert files["sales/orders/a.csv"]["status"] == "verified"
    assert files["sales/orders/b.csv"]["error"] == \
        f"size mismatch: declared {len(ORDERS)} bytes, uploaded {len(ORDERS) - 6}"
    assert files["sales/orders/c.csv"]["error"] == "not uploaded"


def test_rows_with_problems_are_staged_with_validation_errors_and_reported(deps, client, entities) -> None:
    seed = {"sales/orders/bad.csv": (BAD_ORDERS, "text/csv")}
    answer = open_seeded(client, seed=seed).get_json()
    upload_all(client, answer, seed)
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-a")).get_json()
    assert view["files"][0]["staged"] == {"rows": 3, "rows_with_errors": 2}
    rows = staged(deps, answer["job_id"])
    assert [r.validation_errors for r in rows] == [
        [{"column": "order_id", "error": "required value is missing"}],
        [{"error": "expected 3 fields, found 2"}], []]
    assert rows[1].payload == {"_raw": ["4", "5"]}
    report = [a for a in view["artifacts"] if a["type"] == "validation_report"]
    assert len(report) == 1 and report[0]["metadata"] == {"file": "sales/orders/bad.csv"}
    bucket, name = report[0]["storage_path"].split("/", 1)
    lines = deps.storage.local_path(bucket, name).read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == [1, 2]


def test_other_tenants_job_is_not_found_for_reads_and_writes(deps, client, entities) -> None:
    answer = open_seeded(client).get_json()
    upload_all(client, answer)
    job = answer["job_id"]
    assert client.get(f"/jobs/{job}", headers=bearer("token-b")).status_code == 404
    assert client.post(f"/jobs/{job}/finalize", headers=bearer("token-b")).status_code == 404
    assert client.get(f"/jobs/{job}", headers=bearer("token-a")).get_json()["status"] == "uploading"
    assert client.get("/jobs/not-a-uuid", headers=bearer("token-a")).status_code == 404
    with unit_of_work(deps.sessions) as session:
        assert session.scalar(select(func.count()).select_from(StagingRow)) == 0


def test_missing_or_invalid_token_is_401(client, deps) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dG9rZW4tYQ=="}):
        for method, path in (("post", "/jobs"), ("get", "/jobs/00000000-0000-0000-0000-000000000000"),
                             ("post", "/jobs/00000000-0000-0000-0000-000000000000/finalize")):
            response = getattr(client, method)(path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_invalid_declarations_are_400(client, deps) -> None:
    bad = [{}, {"files": []}, {"files": [{"name": "../x.csv", "checksum": "sha256:" + "0" * 64, "size": 1,
                                          "content_type": "text/csv"}]},
           {"files": [declare("a.csv", b"x") | {"checksum": "crc:123"}]},
           {"files": [declare("a.csv", b"x"), declare("a.csv", b"y")]},
           {"files": [declare("a.csv", b"x") | {"tenant": "tenant_b"}]}]
    for body in bad:
        response = client.post("/jobs", json=body, headers=bearer("token-a"))
        assert response.status_code == 400, body


def test_expired_tampered_and_wrong_type_uploads_are_refused(client, deps, clock) -> None:
    seed = {"sales/orders/x.csv": (ORDERS, "text/csv")}
    answer = open_seeded(client, seed=seed).get_json()
    url = urllib.parse.urlsplit(answer["uploads"][0]["url"])
    query = dict(urllib.parse.parse_qsl(url.query))

    def put(path: str, q: dict, content_type: str = "text/csv"):
        return client.put(f"{path}?{urllib.parse.urlencode(q)}", data=ORDERS, headers={"Content-Type": content_type})

    other_job = url.path.replace(answer["job_id"], "00000000-0000-0000-0000-000000000000")
    assert put(other_job, query).status_code == 403
    assert put(url.path.replace("tenant_a", "tenant_b"), query).status_code == 403
    assert put(url.path, query | {"expires": str(int(query["expires"]) + 3600)}).status_code == 403
    assert put(url.path, query | {"signature": "0" * 64}).status_code == 403
    assert put(url.path, query | {"content_type": "text/plain"}, "text/plain").status_code == 403
    assert put(url.path, query, "application/octet-stream").status_code == 403
    assert client.post(url.path, data=ORDERS).status_code == 405

    assert put(url.path, query).status_code == 200  # the genuine URL works within its 15 minutes
    clock.advance(901)
    expired = put(url.path, query)
    assert expired.status_code == 403 and "expired" in expired.get_json()["error"]


def test_verified_file_without_staging_entity_is_loaded_into_its_warehouse_table(deps, client, tmp_path) -> None:
    from tests.handlers.ingest_support import Ingest

    Ingest(deps, tmp_path).register("""
        dataset: sales
        table: orders
        source: "sales/orders/*.csv"
        format: csv
        columns: {"Order ID": order_id}
        schema:
          - {name: order_id, type: INT64}
          - {name: amount, type: NUMERIC}
          - {name: note, type: STRING}
    """)
    seed = {"sales/orders/2026-11-02.csv": (ORDERS, "text/csv"), "misc/unknown.csv": (ORDERS, "text/csv")}
    answer = open_seeded(client, token="token-default", seed=seed).get_json()
    upload_all(client, answer, seed)
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("token-default")).get_json()
    files = {f["name"]: f for f in view["files"]}
    assert files["sales/orders/2026-11-02.csv"]["status"] == "verified"
    assert files["misc/unknown.csv"]["error"] == "no staging entity or table registered for misc/unknown.csv"
    assert deps.warehouse.query("SELECT order_id, note FROM sales.orders ORDER BY 1").rows == [(1, "first"), (2, None)]
