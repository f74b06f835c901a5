"""`tasks sync`: idempotent upsert of tasks, edges and payload rows; removed tasks disabled."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from database.models import PowerBiReport, Query, Repo, Task, TaskDependency
from database.session import unit_of_work
from engine.definitions import DefinitionError
from engine.sync import sync_directory

DAG = """
dag: d
tasks:
  - {name: load, kind: sql, on_file: [sales.orders], sql: {query: "INSERT INTO mart.x SELECT @batch_id"}}
  - {name: model, kind: dataform, depends_on: [load],
     dataform: {repo: {name: analytics, project: p, location: eu, repository: r, git_commitish: main}}}
  - {name: report, kind: powerbi, depends_on: [model], powerbi: {report: {group_id: g, dataset_id: ds}}}
  - {name: gate, kind: wait_for_files, wait_for_files: {tables: [sales.orders]}}
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dag.yaml").write_text(textwrap.dedent(text))
    return directory


def sync(deps, directory: Path) -> dict[str, list[str]]:
    with unit_of_work(deps.sessions) as session:
        report = sync_directory(session=session, directory=directory, prune=True)
    return {what: report.names(what) for what in ("created", "updated", "unchanged", "disabled")}


def edges(deps) -> set[tuple[str, str]]:
    with deps.sessions() as session:
        names = {t.id: t.name for t in session.scalars(select(Task))}
        return {(names[e.parent_id], names[e.child_id]) for e in session.scalars(select(TaskDependency))}


def test_sync_creates_then_is_idempotent(deps, tmp_path: Path) -> None:
    directory = write(tmp_path / "tasks", DAG)
    assert sync(deps, directory)["created"] == ["load", "model", "report", "gate"]
    assert sync(deps, directory) == {"created": [], "updated": [], "unchanged": ["load", "model", "report", "gate"],
                                     "disabled": []}
    assert edges(deps) == {("load", "model"), ("model", "report")}
    with deps.sessions() as session:
        tasks = {t.name: t for t in session.scalars(select(Task))}
        query = session.get(Query, tasks["load"].query_id)
        repo = session.get(Repo, tasks["model"].repo_id)
        report = session.get(PowerBiReport, tasks["report"].power_bi_report_id)
        assert query.sql_text == "INSERT INTO mart.x SELECT @batch_id" and query.name == "load"
        assert (repo.name, repo.location, repo.git_commitish) == ("analytics", "eu", "main")
        assert (report.group_id, report.dataset_id, report.daily_limit) == ("g", "ds", 8)
        assert tasks["gate"].config["tables"] == ["sales.orders"] and tasks["load"].on_file == ["sales.orders"]
        assert tasks["load"].config["produces"] == ["mart.x"]
        assert len(session.scalars(select(Query)).all()) == 1


def test_sync_reports_updates_and_removals(deps, tmp_path: Path) -> None:
    directory = write(tmp_path / "tasks", DAG)
    sync(deps, directory)
    changed = DAG.replace("SELECT @batch_id", "SELECT @batch_id + 1").replace(
        "  - {name: gate, kind: wait_for_files, wait_for_files: {tables: [sales.orders]}}\n", "").replace(
        "depends_on: [model]", "depends_on: [load]")
    write(directory, changed)
    assert sync(deps, directory) == {"created": [], "updated": ["load", "report"], "unchanged": ["model"],
                                     "disabled": ["gate"]}
    assert edges(deps) == {("load", "model"), ("load", "report")}
    with deps.sessions() as session:
        gate = session.scalars(select(Task).where(Task.name == "gate")).one()
        load = session.scalars(select(Task).where(Task.name == "load")).one()
        assert gate.enabled is False
        assert session.get(Query, load.query_id).sql_text.endswith("+ 1")
    write(directory, DAG)  # the gate comes back
    assert sync(deps, directory)["updated"] == ["load", "report", "gate"]


@pytest.mark.parametrize(("text", "message"), [
    ("tasks:\n  - {name: a, kind: python, python: {callable: 'm:f'}, depends_on: [b]}\n"
     "  - {name: b, kind: python, python: {callable: 'm:f'}, depends_on: [a]}\n", "dependency cycle: "),
    ("tasks:\n  - {name: a, kind: python, python: {callable: 'm:f'}, depends_on: [zzz]}\n", "unknown task 'zzz'"),
])
def test_invalid_dag_is_rejected_and_nothing_changes(deps, tmp_path: Path, text: str, message: str) -> None:
    directory = write(tmp_path / "tasks", DAG)
    sync(deps, directory)
    write(directory, text)
    with pytest.raises(DefinitionError, match=message):
        sync(deps, directory)
    with deps.sessions() as session:
        assert sorted(t.name for t in session.scalars(select(Task).where(Task.enabled))) == [
            "gate", "load", "model", "report"]
