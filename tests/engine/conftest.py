"""Engine test helpers: define tasks in the database, drain the local bus, read batches back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.engine import callables

RECORD = "tests.engine.callables:record"


@pytest.fixture
def caf(deps):
    """The `caf` task commands (cli/tasks.py) on the test's Deps, wide enough that nothing wraps."""
    from cli import tasks

    app = typer.Typer()
    tasks.register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _reset_callables() -> Iterator[None]:
    callables.reset()
    yield
    callables.reset()


def py(name: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    """A python task definition calling tests.engine.callables:record."""
    return {"name": name, "kind": "python", "python": {"callable": RECORD}, "depends_on": list(depends_on),
            **extra}


def define(deps: Any, *tasks: dict[str, Any]) -> dict[str, int]:
    """Validate and sync task definitions; returns name → task id."""
    from pathlib import Path

    from database.session import unit_of_work
    from database.tasks import find_task
    from engine.definitions import TaskDefinition, check_graph
    from engine.sync import sync

    definitions = [TaskDefinition.model_validate(t) for t in tasks]
    check_graph([(Path("<test>"), d) for d in definitions])
    with unit_of_work(deps.sessions) as session:
        sync(session=session, definitions=definitions, prune=True)
    with unit_of_work(deps.sessions) as session:
        return {d.name: find_task(session=session, name=d.name).id for d in definitions}  # type: ignore[union-attr]


def drain(deps: Any) -> int:
    """Deliver every due message, including the ones published meanwhile."""
    total = 0
    while (n := deps.publisher.drain()):
        total += n
    return total


def batch(deps: Any, batch_id: int) -> Any:
    from database.batches import get_batch
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        return get_batch(session=session, batch_id=batch_id)


def runs(deps: Any, batch_id: int) -> dict[str, dict[str, Any]]:
    """Task name → its run row (status, attempt, error, output...)."""
    from database.batches import batch_runs
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        return {r["name"]: r for r in batch_runs(session=session, batch_id=batch_id)}


def statuses(deps: Any, batch_id: int) -> dict[str, str]:
    return {name: r["status"] for name, r in runs(deps, batch_id).items()}


def run_batch(deps: Any, name: str, **kwargs: Any) -> int:
    from engine.scheduler import start_batch

    batch_id = start_batch(deps, name=name, trigger="cli", **kwargs)
    drain(deps)
    return batch_id


def task_messages(deps: Any, task_id: int) -> list[Any]:
    """Messages published on the bus that run (not check) `task_id`."""
    return [m for m in deps.publisher.published
            if m.event_type == "task" and m.data.get("task_id") == task_id and "check" not in m.data]


def permanent(message: str = "broken") -> Exception:
    return callables.permanent(message)


def transient(message: str = "flaky", retry_after: float | None = None) -> Exception:
    return callables.transient(message, retry_after)


# -- files, as ingestion leaves them --------------------------------------------------------------
def register_table(deps: Any, qualified: str) -> int:
    """Registry rows (domain + table) for `dataset.table`; returns the table id."""
    from sqlalchemy import select

    from database.models import Domain, Table
    from database.session import unit_of_work

    dataset, name = qualified.split(".")
    with unit_of_work(deps.sessions) as session:
        domain = session.scalars(select(Domain).where(Domain.name == dataset)).first()
        if domain is None:
            domain = Domain(name=dataset)
            session.add(domain)
            session.flush()
        table = session.scalars(select(Table).where(Table.domain_id == domain.id, Table.name == name)).first()
        if table is None:
            table = Table(domain_id=domain.id, name=name, source_glob=f"{dataset}/{name}/*.csv", format="csv")
            session.add(table)
            session.flush()
        return table.id


_generation = iter(range(1_000_000, 2_000_000))


def land_file(deps: Any, qualified: str, *, md5: str = "md5-1", status: str = "SUCCESS",
              publish: bool = True) -> tuple[int, int]:
    """What ingestion does for one loaded file: a `file` batch, the files row, a file_loaded event.

    Returns (file id, batch id).
    """
    from database.models import File, TaskBatch
    from database.session import unit_of_work
    from values.messages import OutgoingMessage

    table_id = register_table(deps, qualified)
    dataset, name = qualified.split(".")
    generation = next(_generation)
    with unit_of_work(deps.sessions) as session:
        batch_row = TaskBatch(trigger="file", root=qualified)
        session.add(batch_row)
        session.flush()
        file = File(bucket="landing", name=f"{dataset}/{name}/{generation}.csv", generation=generation,
                    status=status, md5=md5, crc32c="crc", table_id=table_id, batch_id=batch_row.id)
        session.add(file)
        session.flush()
        file_id, batch_id = file.id, batch_row.id
    if publish and status == "SUCCESS":
        deps.publisher.publish(OutgoingMessage("file_loaded", {
            "file_id": file_id, "batch_id": batch_id, "dataset": dataset, "table": name, "bucket": "landing",
            "name": f"{dataset}/{name}/{generation}.csv", "generation": generation, "md5": md5, "crc32c": "crc"}))
    return file_id, batch_id
