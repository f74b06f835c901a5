"""`python` tasks: a callable of this project (`package.module:function`) called with a TaskContext.

It may return None or a dict (the recorded output), or an Outcome (Done, Pending, Skip). Only
modules that live inside the project can be named, so a task file cannot call arbitrary code.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.kinds.base import Done, Outcome, Pending, Skip, TaskContext
from errors import PermanentError


def start(ctx: TaskContext) -> Outcome:
    func = resolve(str(ctx.task.config.get("callable", "")))
    result = func(ctx)
    if isinstance(result, Done | Pending | Skip):
        return result
    if result is None:
        return Done()
    if isinstance(result, dict):
        return Done(result)
    return Done({"result": repr(result)[:1000]})


check = start


@functools.cache
def resolve(path: str) -> Callable[[TaskContext], Any]:
    """The callable named `module:function`, imported once per process."""
    from config.settings import PROJECT_ROOT

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise PermanentError(f"python callable {path!r} is not 'package.module:function'")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise PermanentError(f"python callable {path!r}: module {module_name} not found")
    origin = Path(spec.origin)
    installed = origin.is_relative_to(Path(sys.prefix).resolve()) or "site-packages" in origin.parts
    if not origin.is_absolute() or installed or not origin.resolve().is_relative_to(PROJECT_ROOT.resolve()):
        raise PermanentError(f"python callable {path!r}: module {module_name} is not part of the project")
    func = getattr(importlib.import_module(module_name), attr, None)
    if not callable(func):
        raise PermanentError(f"python callable {path!r}: {attr} is not a callable of {module_name}")
    return func


def noop(ctx: TaskContext) -> None:
    """Does nothing: for wiring DAGs together and for benchmarks."""
    return None
