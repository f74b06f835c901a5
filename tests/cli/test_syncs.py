"""Syncs never delete by surprise: `caf tasks sync` disables only with --prune; both syncs have --dry-run."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from config.settings import PROJECT_ROOT
from tests.cli.conftest import write_yaml
from tests.handlers.ingest_support import ORDERS

MINE = "name: my_report\nkind: python\npython: {callable: 'engine.kinds.python:noop'}\n"


def enabled(deps) -> set[str]:
    from database.models import Task

    with deps.sessions() as session:
        return set(session.scalars(select(Task.name).where(Task.enabled)))


def test_tasks_sync_of_another_folder_keeps_the_demo_tasks_unless_pruned(caf, deps, tmp_path: Path) -> None:
    demo = caf("tasks", "sync", str(PROJECT_ROOT / "examples" / "tasks"))
    assert demo.code == 0, demo.text
    demo_tasks = enabled(deps)
    assert len(demo_tasks) >= 2
    mine = write_yaml(tmp_path / "my-tasks", "mine.yaml", MINE)

    kept = caf("tasks", "sync", str(mine))
    assert kept.code == 0
    assert enabled(deps) == demo_tasks | {"my_report"}
    assert f"1 created, 0 updated, 0 unchanged, 0 disabled, {len(demo_tasks)} missing" in kept.out
    assert "--prune" in kept.out

    plan = caf("tasks", "sync", str(mine), "--prune", "--dry-run", "--json")
    assert plan.code == 0
    data = json.loads(plan.out)
    assert data["dry_run"] is True and data["counts"]["disabled"] == len(demo_tasks)
    assert enabled(deps) == demo_tasks | {"my_report"}  # the dry run changed nothing

    pruned = caf("tasks", "sync", str(mine), "--prune")
    assert pruned.code == 0 and f"{len(demo_tasks)} disabled" in pruned.out
    assert enabled(deps) == {"my_report"}


def test_registry_sync_dry_run_writes_nothing(caf, deps, tmp_path: Path) -> None:
    folder = write_yaml(tmp_path / "defs", "orders.yaml", ORDERS)
    plan = caf("registry", "sync", str(folder), "--dry-run")
    assert plan.code == 0 and "would create" in plan.words and "created at the first load" in plan.words
    assert "dry run" in plan.words
    applied = caf("registry", "sync", str(folder), "--json")
    assert applied.code == 0
    assert json.loads(applied.out)["tables"][0]["registry"] == "created"  # the dry run had not written it
