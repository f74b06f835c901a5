"""Schema drift has a way forward, through the CLI only: plan, safe widenings, `caf table rebuild`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import write_yaml

FLIGHTS = """\
    dataset: air
    table: flights
    source: air/flights/*.csv
    format: csv
    schema:
      - {name: flight, type: STRING, mode: REQUIRED}
      - {name: carrier, type: INT64}
      - {name: seats, type: INT64}
"""


def flights(tmp_path: Path, carrier: str = "INT64", seats: str = "INT64") -> Path:
    text = FLIGHTS.replace("carrier, type: INT64", f"carrier, type: {carrier}").replace(
        "seats, type: INT64", f"seats, type: {seats}")
    return write_yaml(tmp_path / "tables", "flights.yaml", text)


def csv_file(tmp_path: Path, name: str, rows: str) -> str:
    path = tmp_path / name
    path.write_text("flight,carrier,seats\n" + rows)
    return str(path)


def rows(deps) -> list[tuple]:
    return deps.warehouse.query("SELECT flight, carrier, seats FROM air.flights ORDER BY flight").rows


def test_int64_to_string_carrier_ends_with_files_loading(caf, deps, tmp_path: Path) -> None:
    tables = flights(tmp_path)
    assert caf("registry", "sync", str(tables)).code == 0
    assert caf("ingest", csv_file(tmp_path, "day1.csv", "F1,19805,180\nF2,19790,150\n"),
               "--prefix", "air/flights/").code == 0

    flights(tmp_path, carrier="STRING")  # the type was wrong: carriers are codes like "UA"
    plan = caf("registry", "sync", str(tables), "--dry-run")
    assert plan.code == 1, plan.text
    assert "convert carrier INT64 → STRING" in plan.words and "caf table rebuild air.flights" in plan.words
    assert "would update" in plan.words and "dry run" in plan.words
    assert caf("registry", "sync", str(tables), "--dry-run", "--json").code == 1  # nothing was written

    applied = caf("registry", "sync", str(tables), "--json")
    assert applied.code == 1
    data = json.loads(applied.out)
    assert data["needs_rebuild"] == ["air.flights"] and data["tables"][0]["registry"] == "updated"

    day2 = csv_file(tmp_path, "day2.csv", "F3,UA,200\n")
    failed = caf("ingest", day2, "--prefix", "air/flights/")
    assert failed.code == 1 and "caf table rebuild air.flights" in " ".join(failed.out.split())

    preview = caf("table", "rebuild", "air.flights", "--dry-run")
    assert preview.code == 0 and "carrier" in preview.out and "nothing changed" in preview.out
    assert deps.warehouse.table_columns("air", "flights")["carrier"] == "INT64"
    rebuilt = caf("table", "rebuild", "air.flights")
    assert rebuilt.code == 0, rebuilt.text
    assert deps.warehouse.table_columns("air", "flights")["carrier"] == "STRING"

    again = caf("ingest", day2, "--prefix", "air/flights/")
    assert again.code == 0 and "SUCCESS" in again.out
    assert rows(deps) == [("F1", "19805", 180), ("F2", "19790", 150), ("F3", "UA", 200)]
    synced = caf("registry", "sync", str(tables))
    assert synced.code == 0 and "in sync" in synced.out


def test_safe_widening_is_applied_by_sync_and_keeps_values(caf, deps, tmp_path: Path) -> None:
    tables = flights(tmp_path)
    caf("registry", "sync", str(tables))
    assert caf("ingest", csv_file(tmp_path, "a.csv", "F1,1,180\n"), "--prefix", "air/flights/").code == 0
    flights(tmp_path, seats="NUMERIC")
    result = caf("registry", "sync", str(tables))
    assert result.code == 0, result.text
    assert "widened seats INT64 → NUMERIC" in result.out
    assert deps.warehouse.table_columns("air", "flights")["seats"] == "NUMERIC"
    assert caf("ingest", csv_file(tmp_path, "b.csv", "F2,2,150.5\n"), "--prefix", "air/flights/").code == 0
    assert [str(r[2]) for r in rows(deps)] == ["180.000000000", "150.500000000"]


def test_rebuild_refuses_values_that_do_not_convert_and_changes_nothing(caf, deps, tmp_path: Path) -> None:
    tables = flights(tmp_path, carrier="STRING")
    caf("registry", "sync", str(tables))
    assert caf("ingest", csv_file(tmp_path, "a.csv", "F1,UA,180\nF2,7,150\n"), "--prefix", "air/flights/").code == 0
    flights(tmp_path, carrier="INT64")
    assert caf("registry", "sync", str(tables)).code == 1
    refused = caf("table", "rebuild", "air.flights")
    assert refused.code == 1, refused.text
    said = " ".join(refused.err.split())
    assert "1 value(s) of carrier are not valid INT64" in said and "nothing changed" in said
    assert len(refused.err.strip().splitlines()) <= 2
    assert rows(deps) == [("F1", "UA", 180), ("F2", "7", 150)]


def test_rebuild_of_an_unknown_table_is_a_usage_error(caf, deps) -> None:
    result = caf("table", "rebuild", "air.nope")
    assert result.code == 2 and "not a registered table" in result.err


def test_rebuild_finds_a_tenants_table_by_registry_or_warehouse_name(caf, deps, tmp_path: Path) -> None:
    import dataclasses

    from values.definitions import parse_definition

    deps.settings.jobs.per_tenant_datasets = True
    tables = write_yaml(tmp_path / "tables", "flights.yaml", FLIGHTS + "    tenant: acme\n")
    assert caf("registry", "sync", str(tables)).code == 0
    target = parse_definition(tables / "flights.yaml").table_target()
    deps.warehouse.ensure_table(dataclasses.replace(target, dataset="acme_air"))  # as acme's first load made it
    write_yaml(tmp_path / "tables", "flights.yaml",
               FLIGHTS.replace("carrier, type: INT64", "carrier, type: STRING") + "    tenant: acme\n")
    plan = caf("registry", "sync", str(tables))
    assert plan.code == 1 and "caf table rebuild acme_air.flights" in " ".join(plan.out.split())
    assert caf("table", "rebuild", "air.flights", "--tenant", "other").code == 2
    rebuilt = caf("table", "rebuild", "acme_air.flights")
    assert rebuilt.code == 0, rebuilt.text
    assert deps.warehouse.table_columns("acme_air", "flights")["carrier"] == "STRING"
    assert caf("table", "rebuild", "air.flights", "--tenant", "acme").out.strip().endswith("matches the registry")
