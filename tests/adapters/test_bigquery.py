"""BigQueryWarehouse through the real google-cloud-bigquery client against a loopback fake.

Assertions are on the wire: the REST requests the client sent (job ids, job configurations,
query text and parameters, table resources), as recorded by tests/adapters/fake_bigquery.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from adapters.warehouse.base import LoadRequest, Warehouse
from adapters.warehouse.bigquery.jobs import sanitize_labels
from adapters.warehouse.bigquery.jobs import valid_job_id as _job_id
from adapters.warehouse.bigquery.warehouse import BigQueryWarehouse
from errors import PermanentError, TransientError
from values.tables import Column, TableTarget

from .fake_bigquery import FakeBigQuery

PROJECT = "caf-test"
FAST_RETRY = bigquery.DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.02).with_timeout(0.5)


@pytest.fixture
def fake():
    server = FakeBigQuery(project=PROJECT).start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    c = bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": fake.url}
    )
    yield c
    c.close()


@pytest.fixture
def wh(client):
    return BigQueryWarehouse(project=PROJECT, location="EU", client=client, retry=FAST_RETRY)


def orders(**kw) -> TableTarget:
    base = dict(
        dataset="sales",
        table="orders",
        columns=(
            Column("order_id", "INTEGER", mode="REQUIRED"),
            Column("amount", "NUMERIC"),
            Column("attrs", "JSON"),
            Column("big", "BIGNUMERIC"),
            Column("order_ts", "TIMESTAMP"),
            Column("tags", "STRING", mode="REPEATED"),
        ),
    )
    base.update(kw)
    return TableTarget(**base)


def request(target: TableTarget | None = None, **kw) -> LoadRequest:
    base = dict(
        target=target or orders(),
        staged_uri="gs://caf-staging/sales/orders/42.parquet",
        file_id=42,
        batch_id=7,
        job_id="caf_load_42_1700000000000001",
        replace_file_ids=(41, 42),
        labels={"CAF File": "Sales Q1.csv", "1st": "x" * 100},
    )
    base.update(kw)
    return LoadRequest(**base)


def fields(resource: dict) -> list[tuple[str, str, str]]:
    return [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in resource["schema"]["fields"]]


def seed_table(fake: FakeBigQuery, dataset: str, table: str, schema: list[tuple[str, str, str]]) -> None:
    fake.datasets[dataset] = {"datasetReference": {"projectId": PROJECT, "datasetId": dataset}}
    fake.put_table(
        dataset, table, {"schema": {"fields": [{"name": n, "type": t, "mode": m} for n, t, m in schema]}}
    )


def test_is_a_warehouse(wh):
    port: Warehouse = wh
    assert port.file_id_column == "_source_file_id"


def test_bigquery_emulator_host_means_that_endpoint_and_anonymous_credentials(fake, tmp_path, monkeypatch):
    """BIGQUERY_EMULATOR_HOST (like STORAGE_EMULATOR_HOST): no Application Default Credentials needed."""
    from adapters.warehouse import build_warehouse
    from config.settings import load_settings

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))  # ADC would fail
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", fake.url)
    warehouse = build_warehouse(load_settings(warehouse_url=f"bigquery://{PROJECT}"))
    try:
        assert warehouse.query("SELECT 1").job_id and fake.job_inserts()
    finally:
        warehouse.close()


def test_client_is_built_lazily():
    w = BigQueryWarehouse(project=PROJECT)
    assert w._client is None
    w.close()  # nothing built, nothing to close


# -- tables -------------------------------------------------------------------------------
def test_table_columns(wh, fake):
    assert wh.table_columns("sales", "orders") is None
    seed_table(
        fake,
        "sales",
        "orders",
        [
            ("id", "INTEGER", "REQUIRED"),
            ("x", "FLOAT", "NULLABLE"),
            ("ok", "BOOLEAN", "NULLABLE"),
            ("j", "JSON", "NULLABLE"),
        ],
    )
    assert wh.table_columns("sales", "orders") == {"id": "INT64", "x": "FLOAT64", "ok": "BOOL", "j": "JSON"}


def test_ensure_table_creates_dataset_and_partitioned_clustered_table(wh, fake):
    target = orders(
        keys=("order_id", "amount", "attrs", "tags", "order_ts", "big"),
        partition_field="order_ts",
        write_mode="merge",
    )
    wh.ensure_table(target)

    assert [(r.method, r.path, r.status) for r in fake.requests] == [
        ("GET", "datasets/sales/tables/orders", 404),
        ("GET", "datasets/sales", 404),
        ("POST", "datasets", 200),
        ("POST", "datasets/sales/tables", 200),
    ]
    assert fake.requests[2].body["location"] == "EU"
    table = fake.requests[3].body
    assert table["tableReference"] == {"projectId": PROJECT, "datasetId": "sales", "tableId": "orders"}
    assert fields(table) == [
        ("order_id", "INT64", "REQUIRED"),
        ("amount", "NUMERIC", "NULLABLE"),
        ("attrs", "JSON", "NULLABLE"),
        ("big", "BIGNUMERIC", "NULLABLE"),
        ("order_ts", "TIMESTAMP", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
        ("_source_file_id", "INT64", "NULLABLE"),
        ("_batch_id", "INT64", "NULLABLE"),
        ("_source_row", "INT64", "NULLABLE"),
        ("_ingested_at", "TIMESTAMP", "NULLABLE"),
    ]
    assert table["timePartitioning"] == {"type": "DAY", "field": "order_ts"}
    # JSON and REPEATED columns cannot cluster; at most four fields.
    assert table["clustering"] == {"fields": ["order_id", "amount", "order_ts", "big"]}


def test_ensure_table_int64_partition_field_is_not_partitioned(wh, fake):
    wh.ensure_table(orders(partition_field="order_id", keys=("order_id",), write_mode="replace"))
    table = fake.calls("POST", "datasets/sales/tables")[0].body
    assert "timePartitioning" not in table
    assert table["clustering"] == {"fields": ["order_id"]}


def test_ensure_table_append_without_keys_clusters_on_file_id(wh, fake):
    wh.ensure_table(orders())
    assert fake.calls("POST", "datasets/sales/tables")[0].body["clustering"] == {
        "fields": ["_source_file_id"]
    }


def test_ensure_table_existing_dataset_is_not_created(wh, fake):
    fake.datasets["sales"] = {"datasetReference": {"projectId": PROJECT, "datasetId": "sales"}}
    wh.ensure_table(orders())
    assert fake.calls("POST", "datasets") == []


def test_ensure_table_created_concurrently_is_fine(wh, fake):
    # Another instance wins the race: our insert gets 409 after the table came to exist.
    fake.fail_http("POST", "datasets/sales/tables", 409, reason="duplicate", after_effect=True)
    wh.ensure_table(orders())
    assert [r.status for r in fake.calls("POST", "datasets/sales/tables")] == [409]
    assert fake.calls("GET", "datasets/sales/tables/orders")[-1].status == 200


def test_ensure_table_adds_missing_columns_with_patch(wh, fake):
    seed_table(
        fake,
        "sales",
        "orders",
        [
            ("order_id", "INTEGER", "REQUIRED"),
            ("amount", "NUMERIC", "NULLABLE"),
            ("_source_file_id", "INTEGER", "NULLABLE"),
        ],
    )
    etag = fake.tables[("sales", "orders")]["etag"]
    wh.ensure_table(orders())

    (patch,) = fake.calls("PATCH", "datasets/sales/tables/orders")
    assert patch.headers["if-match"] == etag
    assert set(patch.body) == {"schema"}
    assert fields(patch.body) == [
        ("order_id", "INTEGER", "REQUIRED"),
        ("amount", "NUMERIC", "NULLABLE"),
        ("_source_file_id", "INTEGER", "NULLABLE"),
        # added: always NULLABLE (REQUIRED cannot be added to a table with rows), REPEATED kept
        ("attrs", "JSON", "NULLABLE"),
        ("big", "BIGNUMERIC", "NULLABLE"),
        ("order_ts", "TIMESTAMP", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
        ("_batch_id", "INT64", "NULLABLE"),
        ("_source_row", "INT64", "NULLABLE"),
        ("_ingested_at", "TIMESTAMP", "NULLABLE"),
    ]
    assert fake.calls("POST") == []


def test_ensure_table_patch_race_rereads_and_retries(wh, fake):
    seed_table(fake, "sales", "orders", [("order_id", "INTEGER", "REQUIRED")])
    fake.fail_http("PATCH", "datasets/sales/tables/orders", 412, reason="conditionNotMet")
    wh.ensure_table(orders())
    assert [r.status for r in fake.calls("PATCH", "datasets/sales/tables/orders")] == [412, 200]
    assert len(fake.calls("GET", "datasets/sales/tables/orders")) == 2


def test_ensure_table_without_add_columns_leaves_table(wh, fake):
    seed_table(fake, "sales", "orders", [("order_id", "INTEGER", "REQUIRED")])
    wh.ensure_table(orders(), add_columns=False)
    assert fake.calls("PATCH") == []


def test_ensure_table_type_conflict_is_permanent(wh, fake):
    seed_table(fake, "sales", "orders", [("order_id", "STRING", "NULLABLE")])
    with pytest.raises(
        PermanentError, match="column order_id is STRING in the warehouse but INT64 in the registry"
    ):
        wh.ensure_table(orders())
    assert fake.calls("PATCH") == []


def test_ensure_table_repeated_conflict_is_permanent(wh, fake):
    seed_table(fake, "sales", "orders", [("tags", "STRING", "NULLABLE")])
    with pytest.raises(PermanentError, match="column tags is STRING in the warehouse but ARRAY<STRING>"):
        wh.ensure_table(orders())


# -- identifiers: rejected before anything is sent ----------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        orders(dataset="sales`; DROP TABLE x; --"),
        orders(table="orders` WHERE TRUE; --"),
        orders(columns=(Column("a` STRING, b", "STRING"),)),
        orders(columns=(Column("_FILE_NAME", "STRING"),)),
        orders(columns=(Column("_source_file_id", "INT64"),)),
        orders(columns=(Column("ok", "STRING; DROP"),)),
        orders(keys=("order_id`) OR TRUE --",)),
        orders(partition_field="order_ts` IS NULL; --"),
        orders(columns=(Column("a", "STRING"), Column("A", "STRING"))),
    ],
    ids=[
        "dataset",
        "table",
        "column",
        "reserved-prefix",
        "lineage-name",
        "type",
        "key",
        "partition",
        "duplicate",
    ],
)
def test_bad_identifiers_are_rejected_before_any_request(wh, fake, target):
    with pytest.raises(PermanentError):
        wh.ensure_table(target)
    with pytest.raises(PermanentError):
        wh.load(request(target))
    assert fake.requests == []


def test_bad_table_names_in_lookups(wh, fake):
    with pytest.raises(PermanentError):
        wh.table_columns("sales", "x`; DROP")
    with pytest.raises(PermanentError):
        wh.count_rows("a.b", "t")
    assert fake.requests == []


def test_load_checks_request_before_any_request(wh, fake):
    with pytest.raises(PermanentError, match="gs://"):
        wh.load(request(staged_uri="file:///tmp/x.parquet"))
    with pytest.raises(PermanentError, match="no keys"):
        wh.load(request(orders(write_mode="merge")))
    with pytest.raises(PermanentError, match="write mode"):
        wh.load(request(orders(write_mode="upsert")))
    assert fake.requests == []


# -- loads --------------------------------------------------------------------------------
def test_append_load_on_the_wire(wh, fake):
    fake.load_rows = 3
    result = wh.load(request())

    assert (result.rows_loaded, result.job_id) == (3, "caf_load_42_1700000000000001_apply")
    stage_dataset = fake.calls("POST", "datasets")[0].body
    assert stage_dataset["datasetReference"]["datasetId"] == "_caf_staging"
    assert stage_dataset["defaultTableExpirationMs"] == str(7 * 24 * 3600 * 1000)

    stage, apply = fake.job_inserts()
    assert stage.body["jobReference"] == {
        "projectId": PROJECT,
        "jobId": "caf_load_42_1700000000000001_stage",
        "location": "EU",
    }
    load = stage.body["configuration"]["load"]
    assert load["sourceUris"] == ["gs://caf-staging/sales/orders/42.parquet"]
    assert load["sourceFormat"] == "PARQUET"
    assert load["writeDisposition"] == "WRITE_TRUNCATE"
    assert load["destinationTable"] == {
        "projectId": PROJECT,
        "datasetId": "_caf_staging",
        "tableId": "sales__orders__42",
    }
    assert load["parquetOptions"] == {"enableListInference": True}
    # Explicit schema; JSON and BIGNUMERIC staged as text, nothing REQUIRED in the scratch table.
    assert fields(load) == [
        ("order_id", "INT64", "NULLABLE"),
        ("amount", "NUMERIC", "NULLABLE"),
        ("attrs", "STRING", "NULLABLE"),
        ("big", "STRING", "NULLABLE"),
        ("order_ts", "TIMESTAMP", "NULLABLE"),
        ("tags", "STRING", "REPEATED"),
        ("_source_file_id", "INT64", "NULLABLE"),
        ("_batch_id", "INT64", "NULLABLE"),
        ("_source_row", "INT64", "NULLABLE"),
        ("_ingested_at", "TIMESTAMP", "NULLABLE"),
    ]
    labels = {"caf_file": "sales_q1_csv", "l_1st": "x" * 63}
    assert stage.body["configuration"]["labels"] == labels

    assert apply.body["jobReference"]["jobId"] == "caf_load_42_1700000000000001_apply"
    assert apply.body["configuration"]["labels"] == labels
    query = apply.body["configuration"]["query"]
    assert query["useLegacySql"] is False
    assert query["queryParameters"] == [
        {
            "name": "file_ids",
            "parameterType": {"type": "ARRAY", "arrayType": {"type": "INT64"}},
            "parameterValue": {"arrayValues": [{"value": "41"}, {"value": "42"}]},
        }
    ]
    sql = query["query"]
    target, staging = "`caf-test`.`sales`.`orders`", "`caf-test`.`_caf_staging`.`sales__orders__42`"
    assert sql.startswith("BEGIN TRANSACTION;") and sql.endswith("COMMIT TRANSACTION;")
    assert f"DELETE FROM {target} WHERE `_source_file_id` IN UNNEST(@file_ids);" in sql
    assert (
        f"INSERT INTO {target} (`order_id`, `amount`, `attrs`, `big`, `order_ts`, `tags`, "
        "`_source_file_id`, `_batch_id`, `_source_row`, `_ingested_at`)" in sql
    )
    assert "PARSE_JSON(`attrs`, wide_number_mode=>'round')" in sql
    assert "CAST(`big` AS BIGNUMERIC)" in sql
    assert f"FROM {staging};" in sql
    # No value from the request is spliced into the SQL (the file id only names the scratch table).
    assert not re.search(r"\b4[12]\b", sql.replace(staging, ""))
    assert "Sales" not in sql

    (drop,) = fake.calls("DELETE")
    assert drop.path == "datasets/_caf_staging/tables/sales__orders__42"
    assert ("_caf_staging", "sales__orders__42") not in fake.tables


def test_job_ids_are_deterministic(wh, fake):
    wh.load(request())
    first = [r.body["jobReference"]["jobId"] for r in fake.job_inserts()]
    fake.jobs.clear()
    wh.load(request())
    assert [r.body["jobReference"]["jobId"] for r in fake.job_inserts()] == first * 2


def test_second_load_of_same_version_reattaches(wh, fake):
    fake.load_rows = 5
    first = wh.load(request())
    fake.load_rows = 999  # a second load job would report this
    second = wh.load(request())

    assert second == first
    assert [(r.body["jobReference"]["jobId"][-6:], r.status) for r in fake.job_inserts()] == [
        ("_stage", 200),
        ("_apply", 200),
        ("_stage", 409),
        ("_apply", 409),
    ]
    assert [r.path for r in fake.calls("GET", "jobs/.*")] == [
        "jobs/caf_load_42_1700000000000001_stage",
        "jobs/caf_load_42_1700000000000001_apply",
    ]
    assert fake.calls("GET", "jobs/.*")[0].query["location"] == ["EU"]
    assert len(fake.jobs) == 2


def test_lost_insert_response_reattaches_instead_of_appending_twice(wh, fake):
    # The first jobs.insert of the apply step reaches BigQuery but its response is lost (503):
    # the client retries the insert with the same id, gets 409 and the adapter waits on the job.
    fake.fail_http("POST", "jobs", 503, after_effect=True)
    wh.load(request())
    assert [r.status for r in fake.job_inserts()] == [503, 409, 200]
    assert len(fake.jobs) == 2
    assert fake.calls("GET", "jobs/caf_load_42_1700000000000001_stage")


def test_503_once_is_retried(wh, fake):
    fake.fail_http("POST", "jobs", 503)
    fake.fail_http("GET", "datasets/_caf_staging", 503)
    wh.load(request())
    assert [r.status for r in fake.job_inserts()] == [503, 200, 200]
    assert len(fake.jobs) == 2


def test_persistent_5xx_is_transient(wh, fake):
    for _ in range(200):
        fake.fail_http("POST", "jobs", 503)
    with pytest.raises(TransientError):
        wh.load(request())


def test_forbidden_request_is_permanent(wh, fake):
    fake.fail_http("POST", "jobs", 403, reason="accessDenied")
    with pytest.raises(PermanentError) as info:
        wh.load(request())
    assert not isinstance(info.value, TransientError)
    assert len(fake.job_inserts()) == 1


def test_transient_job_failure_then_redelivery_uses_next_job_id(wh, fake):
    fake.fail_job(r"_apply$", "backendError", "Backend error. Job aborted.")
    with pytest.raises(TransientError, match="Backend error"):
        wh.load(request())
    assert ("_caf_staging", "sales__orders__42") in fake.tables  # kept for the retry

    result = wh.load(request())
    ids = [(r.body["jobReference"]["jobId"].rsplit("_", 2)[-2:], r.status) for r in fake.job_inserts()]
    assert ids == [
        (["1700000000000001", "stage"], 200),
        (["1700000000000001", "apply"], 200),
        (["1700000000000001", "stage"], 409),
        (["1700000000000001", "apply"], 409),
        (["apply", "r2"], 200),
    ]
    assert result.job_id == "caf_load_42_1700000000000001_apply_r2"
    assert ("_caf_staging", "sales__orders__42") not in fake.tables


def test_permanent_job_failure_stops_before_apply(wh, fake):
    fake.fail_job(
        r"_stage$", "invalid", "Error while reading data, error message: Parquet column 'x' has type BYTE"
    )
    with pytest.raises(PermanentError, match="Parquet column 'x'") as info:
        wh.load(request())
    assert not isinstance(info.value, TransientError)
    assert len(fake.job_inserts()) == 1
    # Redelivered anyway: the failed job is found and the same permanent error comes back.
    with pytest.raises(PermanentError, match="Parquet column 'x'"):
        wh.load(request())
    assert len(fake.job_inserts()) == 2


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("backendError", TransientError),
        ("rateLimitExceeded", TransientError),
        ("internalError", TransientError),
        ("jobInternalError", TransientError),
        ("jobRateLimitExceeded", TransientError),
        ("invalid", PermanentError),
        ("invalidQuery", PermanentError),
        ("notFound", PermanentError),
        ("duplicate", PermanentError),
        ("accessDenied", PermanentError),
        ("billingNotEnabled", PermanentError),
        ("quotaExceeded", PermanentError),
    ],
)
def test_job_error_reasons(wh, fake, reason, kind):
    fake.fail_job(r"_apply$", reason, f"{reason} happened")
    with pytest.raises(kind, match=f"{reason} happened") as info:
        wh.load(request())
    assert isinstance(info.value, TransientError) == (kind is TransientError)


def test_concurrent_update_is_transient(wh, fake):
    fake.fail_job(
        r"_apply$",
        "invalidQuery",
        "Transaction is aborted due to concurrent update against table caf-test:sales.orders",
    )
    with pytest.raises(TransientError):
        wh.load(request())


def test_replace_with_partition_field(wh, fake):
    wh.load(request(orders(write_mode="replace", partition_field="order_ts")))
    query = fake.job_inserts()[1].body["configuration"]["query"]
    sql = query["query"]
    assert query.get("queryParameters", []) == []
    t, s = "`caf-test`.`sales`.`orders`", "`caf-test`.`_caf_staging`.`sales__orders__42`"
    assert sql.startswith("BEGIN TRANSACTION;") and sql.endswith("COMMIT TRANSACTION;")
    assert (
        f"DELETE FROM {t}\nWHERE DATE(`order_ts`) IN (SELECT DISTINCT DATE(`order_ts`) FROM {s} "
        "WHERE `order_ts` IS NOT NULL)"
    ) in sql
    assert f"OR (`order_ts` IS NULL AND EXISTS (SELECT 1 FROM {s} WHERE `order_ts` IS NULL));" in sql
    assert sql.index("DELETE") < sql.index(f"INSERT INTO {t}")


def test_replace_by_a_date_partition_uses_the_column_itself(wh, fake):
    """BigQuery documents DATE() for TIMESTAMP / DATETIME, not for a DATE argument: none is emitted."""
    columns = (Column("order_id", "INTEGER", mode="REQUIRED"), Column("order_date", "DATE"))
    wh.load(request(orders(write_mode="replace", partition_field="order_date", columns=columns)))
    sql = fake.job_inserts()[1].body["configuration"]["query"]["query"]
    assert "WHERE `order_date` IN (SELECT DISTINCT `order_date` FROM " in sql and "DATE(" not in sql


def test_replace_without_partition_field(wh, fake):
    wh.load(request(orders(write_mode="replace")))
    sql = fake.job_inserts()[1].body["configuration"]["query"]["query"]
    assert "DELETE FROM `caf-test`.`sales`.`orders` WHERE TRUE;" in sql
    assert sql.index("DELETE") < sql.index("INSERT INTO") < sql.index("COMMIT TRANSACTION")


def test_merge(wh, fake):
    wh.load(request(orders(write_mode="merge", keys=("order_id",))))
    query = fake.job_inserts()[1].body["configuration"]["query"]
    sql = query["query"]
    assert query.get("queryParameters", []) == []
    assert sql.startswith(
        "MERGE `caf-test`.`sales`.`orders` AS T\nUSING (SELECT `order_id`, `amount`, "
        "PARSE_JSON(`attrs`, wide_number_mode=>'round') AS `attrs`, "
        "CAST(`big` AS BIGNUMERIC) AS `big`, "
    )
    assert "ON T.`order_id` IS NOT DISTINCT FROM S.`order_id`\n" in sql
    assert "WHEN MATCHED THEN UPDATE SET `amount` = S.`amount`, " in sql
    assert "`order_id` = S.`order_id`" not in sql
    assert "`_source_file_id` = S.`_source_file_id`" in sql
    assert "WHEN NOT MATCHED THEN INSERT (`order_id`, " in sql and "VALUES (S.`order_id`, " in sql


# -- queries ------------------------------------------------------------------------------
def test_query_parameters_and_results(wh, fake):
    fake.results["FROM things"] = {
        "fields": [("n", "INTEGER"), ("s", "STRING")],
        "rows": [[1, "a"], [2, None]],
    }
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    result = wh.query(
        "SELECT n, s FROM things WHERE a = @a AND b = @b",
        {
            "s": "x'; DROP TABLE t; --",
            "b": True,
            "i": 7,
            "f": 1.5,
            "d": decimal.Decimal("1.25"),
            "day": dt.date(2024, 5, 1),
            "ts": when,
            "naive": when.replace(tzinfo=None),
            "none": None,
            "ids": [3, 1, 2],
            "names": ("a", "b"),
        },
        job_id="caf_q_1",
        labels={"Purpose": "Audit"},
    )
    assert result.rows == [(1, "a"), (2, None)]
    assert result.columns == ["n", "s"]
    assert result.job_id == "caf_q_1"

    (insert,) = fake.job_inserts()
    assert insert.body["jobReference"]["jobId"] == "caf_q_1"
    assert insert.body["configuration"]["labels"] == {"purpose": "audit"}
    params = {p["name"]: p for p in insert.body["configuration"]["query"]["queryParameters"]}
    assert {n: p["parameterType"]["type"] for n, p in params.items()} == {
        "s": "STRING",
        "b": "BOOL",
        "i": "INT64",
        "f": "FLOAT64",
        "d": "NUMERIC",
        "day": "DATE",
        "ts": "TIMESTAMP",
        "naive": "DATETIME",
        "none": "STRING",
        "ids": "ARRAY",
        "names": "ARRAY",
    }
    assert params["s"]["parameterValue"] == {"value": "x'; DROP TABLE t; --"}
    assert params["ids"]["parameterType"]["arrayType"] == {"type": "INT64"}
    assert params["ids"]["parameterValue"] == {
        "arrayValues": [{"value": "3"}, {"value": "1"}, {"value": "2"}]
    }
    assert params["names"]["parameterType"]["arrayType"] == {"type": "STRING"}
    assert params["none"]["parameterValue"].get("value") is None
    assert insert.body["configuration"]["query"]["query"] == "SELECT n, s FROM things WHERE a = @a AND b = @b"


def test_query_dml_rows_affected(wh, fake):
    fake.results["UPDATE"] = {"dml": 4}
    result = wh.query("UPDATE t SET x = 1 WHERE TRUE")
    assert result.rows_affected == 4
    assert result.rows == []
    (insert,) = fake.job_inserts()
    assert insert.body["jobReference"]["jobId"]  # generated by the client when none is given


def test_query_with_job_id_reattaches(wh, fake):
    fake.results["SELECT"] = {"fields": [("n", "INTEGER")], "rows": [[1]]}
    first = wh.query("SELECT 1 AS n", job_id="caf_q_2")
    second = wh.query("SELECT 1 AS n", job_id="caf_q_2")
    assert first == second
    assert [r.status for r in fake.job_inserts()] == [200, 409]
    assert len(fake.jobs) == 1


def test_query_rejects_bad_parameter_names(wh, fake):
    with pytest.raises(PermanentError):
        wh.query("SELECT @x", {"x; DROP": 1})
    with pytest.raises(TypeError):
        wh.query("SELECT @x", {"x": object()})
    assert fake.requests == []


def test_query_error_is_translated(wh, fake):
    fake.fail_job(r"^caf_q_bad$", "invalidQuery", "Syntax error: Unexpected end of script")
    with pytest.raises(PermanentError, match="Syntax error"):
        wh.query("SELECT", job_id="caf_q_bad")


def test_jobs_that_are_still_running_are_polled(wh, fake):
    fake.done_on_insert = False
    fake.load_rows = 2
    assert wh.load(request()).rows_loaded == 2
    assert [r.path.rsplit("_", 1)[-1] for r in fake.calls("GET", "jobs/.*")] == ["stage", "apply"]


def test_count_rows(wh, fake):
    assert wh.count_rows("sales", "orders") == 0
    seed_table(fake, "sales", "orders", [("id", "INTEGER", "NULLABLE")])
    fake.tables[("sales", "orders")]["numRows"] = "12"
    assert wh.count_rows("sales", "orders") == 12


# -- helpers ------------------------------------------------------------------------------
def test_job_id_sanitising_is_deterministic_and_collision_free():
    assert _job_id("caf_load_1-2") == "caf_load_1-2"
    a, b = _job_id("load:sales/orders@1"), _job_id("load:sales/orders#1")
    assert a == _job_id("load:sales/orders@1")
    assert a != b
    assert re.fullmatch(r"[A-Za-z0-9_-]+", a) and a.startswith("load_sales_orders_1_")


def test_sanitize_labels():
    assert sanitize_labels({"File Name": "Sales/Q1 2024.CSV", "9x": "y", "Ünï": "ok"}) == {
        "file_name": "sales_q1_2024_csv",
        "l_9x": "y",
        "l__n_": "ok",
    }
    assert len(sanitize_labels({f"k{i}": "v" for i in range(100)})) == 64
    assert sanitize_labels({"k" * 100: "v" * 100}) == {"k" * 63: "v" * 63}


# -- first generation of an append: one free load job ------------------------------------
def plain_orders(**kw) -> TableTarget:
    """Orders without JSON / BIGNUMERIC columns (those are staged as text and need the apply step)."""
    cols = tuple(c for c in orders().columns if c.type not in ("JSON", "BIGNUMERIC"))
    return orders(columns=cols, **kw)


def test_first_generation_append_is_one_load_job_into_the_target(wh, fake):
    wh.ensure_table(plain_orders())
    fake.load_rows = 3
    result = wh.load(request(plain_orders(), replace_file_ids=(42,), first_load=True))

    (job,) = fake.job_inserts()  # no scratch table, no DML query job
    assert job.body["jobReference"]["jobId"] == "caf_load_42_1700000000000001_append"
    load = job.body["configuration"]["load"]
    assert load["destinationTable"] == {"projectId": PROJECT, "datasetId": "sales", "tableId": "orders"}
    assert (load["writeDisposition"], load["createDisposition"]) == ("WRITE_APPEND", "CREATE_NEVER")
    assert load["sourceUris"] == ["gs://caf-staging/sales/orders/42.parquet"]
    # The table's own schema, REQUIRED included, so the append is accepted as is.
    assert fields(load)[0] == ("order_id", "INT64", "REQUIRED")
    assert (result.rows_loaded, result.job_id) == (3, "caf_load_42_1700000000000001_append")
    assert "_caf_staging" not in fake.datasets
    assert fake.tables[("sales", "orders")]["numRows"] == "3"


def test_first_generation_append_retried_reattaches_instead_of_appending_twice(wh, fake):
    wh.ensure_table(plain_orders())
    fake.load_rows = 3
    first = wh.load(request(plain_orders(), first_load=True))
    fake.load_rows = 999  # a second load job would append these
    second = wh.load(request(plain_orders(), first_load=True))

    assert second == first
    assert [r.status for r in fake.job_inserts()] == [200, 409]
    assert fake.tables[("sales", "orders")]["numRows"] == "3"


def test_failed_first_append_retries_under_the_next_id(wh, fake):
    wh.ensure_table(plain_orders())
    fake.fail_job(r"_append$", "backendError", "Backend error. Job aborted.")
    with pytest.raises(TransientError):
        wh.load(request(plain_orders(), first_load=True))
    fake.load_rows = 4
    result = wh.load(request(plain_orders(), first_load=True))
    assert result.job_id == "caf_load_42_1700000000000001_append_r2"
    assert fake.tables[("sales", "orders")]["numRows"] == "4"


@pytest.mark.parametrize(("target", "first_load"), [
    (plain_orders(), False),                      # a later generation: its predecessor's rows go
    (plain_orders(write_mode="replace"), True),   # replace and merge always need the apply step
    (plain_orders(write_mode="merge", keys=("order_id",)), True),
    (orders(), True),                             # JSON / BIGNUMERIC are converted by the apply step
])
def test_other_loads_keep_the_scratch_table_and_apply_job(wh, fake, target, first_load):
    wh.load(request(target, first_load=first_load))
    assert [r.body["jobReference"]["jobId"].rsplit("_", 1)[-1] for r in fake.job_inserts()] == ["stage", "apply"]
