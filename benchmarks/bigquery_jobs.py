"""BigQuery jobs per load, before and after the one-load-job append (issue 14, Must 3).

    python -m benchmarks.bigquery_jobs

Drives the real BigQuery adapter (google-cloud-bigquery client) against the loopback fake of the
tests (tests/adapters/fake_bigquery.py) through a sequence of typical loads, deciding
`first_load` the way the raw-file flow does (no other generation of the object ever recorded),
and prints the jobs CAF starts for each and which are billed. "before" is the same sequence
with every load taking the scratch-table path, which is what every load did before. Load jobs
are free; query jobs (the DML apply step) are billed by the bytes they scan.
"""

from __future__ import annotations

from typing import Any

from adapters.warehouse.base import LoadRequest
from adapters.warehouse.bigquery.warehouse import BigQueryWarehouse
from values.tables import Column, TableTarget

PROJECT = "caf-bench"
COLUMNS = (Column("id", "INT64", "REQUIRED"), Column("amount", "NUMERIC"), Column("ts", "TIMESTAMP"))
SEQUENCE: list[tuple[str, str, int, str]] = [
    # (what happens, object name, generation, write mode)
    ("new object (append)", "sales/orders/2026-11-01.csv", 1, "append"),
    ("new object (append)", "sales/orders/2026-11-02.csv", 1, "append"),
    ("new object (append)", "sales/orders/2026-11-03.csv", 1, "append"),
    ("retry after a crash", "sales/orders/2026-11-03.csv", 1, "append"),
    ("new generation of an object", "sales/orders/2026-11-02.csv", 2, "append"),
    ("replace-mode table", "sales/prices/prices.csv", 1, "replace"),
    ("merge-mode table", "sales/customers/customers.csv", 1, "merge"),
]


def run(fake: Any, *, one_job_appends: bool) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": fake.url})
    wh = BigQueryWarehouse(project=PROJECT, location="EU", client=client)
    ids: dict[tuple[str, int], int] = {}
    generations: dict[str, list[int]] = {}
    out = []
    for what, name, generation, mode in SEQUENCE:
        target = TableTarget(dataset="sales", table=name.split("/")[1], columns=COLUMNS, keys=("id",),
                             write_mode=mode)
        wh.ensure_table(target)
        file_id = ids.setdefault((name, generation), len(ids) + 1)
        known = generations.setdefault(name, [])
        if file_id not in known:
            known.append(file_id)
        before = len(fake.job_inserts())
        wh.load(LoadRequest(target=target, staged_uri=f"gs://landing/_caf/staged/{file_id}.parquet",
                            file_id=file_id, batch_id=file_id, job_id=f"caf_load_{file_id}_{file_id}",
                            replace_file_ids=tuple(known),
                            first_load=one_job_appends and known == [file_id]))
        jobs = []
        for r in fake.job_inserts()[before:]:
            config = r.body["configuration"]
            kind = "load" if "load" in config else "query"
            started = r.status == 200  # 409: an earlier attempt's job, reattached
            jobs.append((r.body["jobReference"]["jobId"].rsplit("_", 1)[-1] + ("" if started else " (reattached)"),
                         kind, started and kind == "query"))
        out.append((what, jobs))
    client.close()
    return out


def main() -> None:
    from tests.adapters.fake_bigquery import FakeBigQuery

    results = {}
    for label, flag in (("before", False), ("after", True)):
        fake = FakeBigQuery(project=PROJECT).start()
        try:
            fake.load_rows = 100
            results[label] = run(fake, one_job_appends=flag)
        finally:
            fake.stop()
    print(f"{'load':<30}{'before: jobs (billed)':<52}{'after: jobs (billed)':<52}")
    totals = {"before": [0, 0], "after": [0, 0]}
    for i, (what, *_) in enumerate(SEQUENCE):
        cells = []
        for label in ("before", "after"):
            jobs = results[label][i][1]
            started = [j for j in jobs if "reattached" not in j[0]]
            totals[label][0] += len(started)
            totals[label][1] += sum(1 for j in jobs if j[2])
            cells.append(", ".join(f"{j[1]} {j[0]}{' $' if j[2] else ''}" for j in jobs) or "-")
        print(f"{what:<30}{cells[0]:<52}{cells[1]:<52}")
    for label in ("before", "after"):
        print(f"{label}: {totals[label][0]} jobs started, {totals[label][1]} billed query jobs ($)")


if __name__ == "__main__":
    main()
