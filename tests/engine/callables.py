"""Task callables for the engine tests: record every call, fail on demand, wait on a barrier."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from engine.kinds.base import TaskContext
from errors import PermanentError, TransientError

CALLS: Counter[tuple[int, str]] = Counter()
ORDER: list[str] = []
FAILURES: dict[str, list[BaseException]] = {}
BARRIERS: dict[str, threading.Barrier] = {}
SLEEP: dict[str, float] = {}
_lock = threading.Lock()


def reset() -> None:
    CALLS.clear()
    ORDER.clear()
    FAILURES.clear()
    BARRIERS.clear()
    SLEEP.clear()


def calls(name: str) -> int:
    return sum(n for (_, task), n in CALLS.items() if task == name)


def record(ctx: TaskContext) -> dict[str, Any]:
    """Count the call; then raise the next planned failure, wait on a barrier or sleep, as configured."""
    name = ctx.task.name
    with _lock:
        CALLS[(ctx.batch_id, name)] += 1
        ORDER.append(name)
        planned = FAILURES.get(name)
        failure = planned.pop(0) if planned else None
    if name in BARRIERS:
        BARRIERS[name].wait(timeout=10)
    if name in SLEEP:
        time.sleep(SLEEP[name])
    if failure is not None:
        raise failure
    return {"called_by": name, "attempt": ctx.attempt}


def transient(message: str = "flaky", retry_after: float | None = None) -> TransientError:
    return TransientError(message, retry_after=retry_after)


def permanent(message: str = "broken") -> PermanentError:
    return PermanentError(message)
