"""`dataform` tasks: compile the `repo` row's repository and start a workflow invocation, then follow it.

The compilation result (unique to the run) is recorded as the run's intent before the invocation
is requested, and the invocation name the moment it exists. A redelivered start finds the name
and checks that invocation; one that finds only the intent (the reply was lost: the remote may
have acted) lists the repository's invocations of that compilation result and adopts the one it
finds instead of creating another. The state is followed by re-published
check messages (RUNNING → SUCCEEDED / FAILED / CANCELLED), never by sleeping. A FAILED
invocation ends the task with the failed actions and their reasons; compilation errors are
permanent and carry their messages (raised by the adapter).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from database.models import Repo
from database.session import unit_of_work
from engine.kinds.base import Done, Outcome, Pending, RemoteFailure, TaskContext
from errors import PermanentError

INTENT = "dataform_intent"
"""Key in the run's output: the compilation result about to be invoked (unique to this run)."""


def client(ctx: TaskContext) -> Any:
    return ctx.deps.dataform


def start(ctx: TaskContext) -> Outcome:
    if ctx.remote_id:
        return check(ctx)
    dataform = client(ctx)
    target = _target(ctx)
    intent = ctx.intent(INTENT)
    if intent and intent.get("compilation_result"):
        # An earlier delivery asked for an invocation and never learnt the answer: the remote may
        # have started it. Adopt it if it exists; otherwise invoke the same compilation result.
        compiled = str(intent["compilation_result"])
        found = dataform.find_invocation(target, compiled)
        if found:
            ctx.log.info("adopting workflow invocation %s started by an earlier delivery", found)
            ctx.record_remote_id(found)
            return Pending(_next_check(ctx), {"invocation": found, "compilation_result": compiled,
                                              "state": "RUNNING", "adopted": True})
    else:
        compiled = dataform.compile(target)  # side-effect free: a lost reply only leaves an unused result
        ctx.record_intent(INTENT, {"compilation_result": compiled, "at": ctx.now().isoformat()})
    name = dataform.invoke(target, compiled)
    ctx.record_remote_id(name)
    return Pending(_next_check(ctx), {"invocation": name, "compilation_result": compiled, "state": "RUNNING"})


def check(ctx: TaskContext) -> Outcome:
    name = ctx.remote_id
    if not name:
        raise PermanentError(f"task {ctx.task.name}: no workflow invocation to check")
    state = client(ctx).get_state(name)
    if not state.done:
        return Pending(_next_check(ctx), {"invocation": name, "state": state.state})
    if state.state == "SUCCEEDED":
        return Done({"invocation": name, "state": state.state})
    failed = "; ".join(f"{a.get('target')}: {a.get('failure_reason') or a.get('state')}"
                       for a in state.failed_actions)
    raise RemoteFailure(f"Dataform invocation {name} {state.state}" + (f": {failed}" if failed else ""),
                        alert="remote_failure",
                        detail={"invocation": name, "state": state.state, "failed_actions": state.failed_actions})


def _next_check(ctx: TaskContext) -> Any:
    return ctx.now() + timedelta(seconds=int(ctx.task.config.get("poll_seconds") or 30))


def _target(ctx: TaskContext) -> Any:
    from adapters.services.dataform import DataformTarget

    if ctx.task.repo_id is None:
        raise PermanentError(f"task {ctx.task.name}: no Dataform repository attached (run `caf tasks sync`)")
    with unit_of_work(ctx.deps.sessions) as session:
        repo = session.get(Repo, ctx.task.repo_id)
        if repo is None:
            raise PermanentError(f"task {ctx.task.name}: repo {ctx.task.repo_id} does not exist")
        return DataformTarget(
            project=repo.project, location=repo.location, repository=repo.repository,
            git_commitish=repo.git_commitish, workspace=repo.workspace, release_config=repo.release_config,
            included_tags=tuple(repo.included_tags or ()), included_targets=tuple(repo.included_targets or ()),
            transitive_dependencies=repo.transitive_dependencies, transitive_dependents=repo.transitive_dependents,
            full_refresh=repo.full_refresh, compilation_vars=dict(repo.compilation_vars or {}),
            service_account=repo.service_account)
