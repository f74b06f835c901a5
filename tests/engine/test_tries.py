"""Every try of a task run is kept: a transient failure retried and a run restarted stay visible in
`caf batch show` (table and --json), instead of being overwritten by the next try."""

from __future__ import annotations

import json

from tests.engine import callables
from tests.engine.conftest import define, py, statuses


def test_restart_and_retries_keep_every_try(caf, deps) -> None:
    deps.settings.tasks.backoff_base_seconds = 0.05
    define(deps, py("extract", dag="nightly", max_attempts=3), py("load", "extract", dag="nightly"))
    callables.FAILURES["extract"] = [callables.transient("warehouse busy"), callables.permanent("source down")]
    failed = caf("run", "nightly")
    assert failed.exit_code == 1 and "source down" in failed.output

    restarted = caf("batch", "restart", "1")
    assert restarted.exit_code == 0, restarted.output
    assert statuses(deps, 1) == {"extract": "SUCCESS", "load": "SUCCESS"}

    shown = caf("batch", "show", "1")
    assert "earlier tries" in shown.output
    assert "warehouse busy" in shown.output and "source down" in shown.output
    assert "upstream task 'extract' failed" in shown.output  # the skipped child's try, too
    tries = json.loads(caf("batch", "show", "1", "--json").output)["tries"]
    assert [(t["name"], t["restart"], t["attempt"], t["status"]) for t in tries] == [
        ("extract", 0, 1, "RETRIED"), ("extract", 0, 2, "ERROR"), ("load", 0, 0, "SKIPPED")]
    assert tries[1]["error"] == "source down" and tries[1]["finished_at"] is not None


def test_a_second_restart_keeps_both_failures(caf, deps) -> None:
    define(deps, py("extract", dag="nightly"))
    callables.FAILURES["extract"] = [callables.permanent("first"), callables.permanent("second")]
    assert caf("run", "nightly").exit_code == 1
    assert caf("batch", "restart", "1").exit_code == 1
    assert caf("batch", "restart", "1").exit_code == 0
    tries = json.loads(caf("batch", "show", "1", "--json").output)["tries"]
    assert [(t["restart"], t["status"], t["error"]) for t in tries] == [(0, "ERROR", "first"), (1, "ERROR", "second")]
