"""BigQuery side of schema drift: column types as the plan compares them, widenings, `caf table rebuild` SQL."""

from __future__ import annotations

import pytest

from adapters.warehouse.drift import plan_table
from errors import PermanentError
from values.tables import Column, TableTarget

from .test_bigquery import client, fake, seed_table, wh  # noqa: F401 - fixtures

TARGET = TableTarget(dataset="air", table="flights", columns=(
    Column("flight", "STRING", "REQUIRED"), Column("carrier", "STRING"), Column("seats", "NUMERIC"),
    Column("tags", "STRING", "REPEATED")))


def seed(fake) -> None:  # noqa: F811
    seed_table(fake, "air", "flights", [("flight", "STRING", "REQUIRED"), ("carrier", "INTEGER", "NULLABLE"),
                                        ("seats", "INTEGER", "NULLABLE"), ("tags", "STRING", "REPEATED"),
                                        ("dep_ts", "TIMESTAMP", "NULLABLE"), ("_source_file_id", "INTEGER",
                                                                              "NULLABLE")])
    fake.tables[("air", "flights")]["timePartitioning"] = {"type": "DAY", "field": "dep_ts"}
    fake.tables[("air", "flights")]["clustering"] = {"fields": ["_source_file_id"]}


def queries(fake) -> list[str]:  # noqa: F811
    return [j.body["configuration"]["query"]["query"] for j in fake.job_inserts()]


def test_plan_sees_widening_conversion_and_repeated_columns(wh, fake) -> None:  # noqa: F811
    seed(fake)
    plan = plan_table(TARGET, wh.table_columns("air", "flights"))
    assert [(c.column, c.action) for c in plan.changes] == [("carrier", "convert"), ("seats", "widen")]
    assert plan.extra == ("dep_ts",) and plan.needs_rebuild


def test_widen_alters_the_column_type_in_place(wh, fake) -> None:  # noqa: F811
    seed(fake)
    wh.widen_columns(TARGET, {"seats": "NUMERIC"})
    assert queries(fake) == ["ALTER TABLE `caf-test`.`air`.`flights` ALTER COLUMN `seats` SET DATA TYPE NUMERIC"]


def test_rebuild_rewrites_the_table_keeping_partitioning_clustering_and_modes(wh, fake) -> None:  # noqa: F811
    seed(fake)
    fake.results["COUNTIF"] = {"fields": [("bad", "INTEGER")], "rows": [[0]]}
    wh.rebuild_table(TARGET, {"carrier": "STRING"})
    check, rebuild = queries(fake)
    assert "SAFE_CAST(`carrier` AS STRING) IS NULL" in check
    assert rebuild.startswith("CREATE OR REPLACE TABLE `caf-test`.`air`.`flights` (`flight` STRING NOT NULL, "
                              "`carrier` STRING, `seats` INT64, `tags` ARRAY<STRING>,")
    assert "PARTITION BY DATE(`dep_ts`)" in rebuild and "CLUSTER BY `_source_file_id`" in rebuild
    assert "CAST(`carrier` AS STRING) AS `carrier`" in rebuild and rebuild.endswith("FROM `caf-test`.`air`.`flights`")


def test_rebuild_refuses_when_values_would_not_convert(wh, fake) -> None:  # noqa: F811
    seed(fake)
    fake.results["COUNTIF"] = {"fields": [("bad", "INTEGER")], "rows": [[3]]}
    with pytest.raises(PermanentError, match="3 value"):
        wh.rebuild_table(TARGET, {"carrier": "STRING"})
    assert not any("CREATE" in q for q in queries(fake))
