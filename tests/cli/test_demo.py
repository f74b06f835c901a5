"""`make demo` (= `caf demo`) loads the samples and runs the DAG once; running it again changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.slow


def counts(deps) -> tuple[int, int, int]:
    from database.models import File, TaskBatch, TaskLog

    with deps.sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(m)) for m in (File, TaskBatch, TaskLog))


def test_demo_twice_creates_nothing_new(caf, deps) -> None:
    first = caf("demo")
    assert first.code == 0, first.text
    assert "first delivery" in first.out and "sales.sales_summary" in first.out
    assert "{'" not in first.out  # summaries in words, not Python dicts
    after_first = counts(deps)
    rows = deps.warehouse.count_rows("sales", "orders")

    second = caf("demo")
    assert second.code == 0, second.text
    assert "already loaded by an earlier demo" in second.out and "first delivery" not in second.out
    assert counts(deps) == after_first
    assert deps.warehouse.count_rows("sales", "orders") == rows
