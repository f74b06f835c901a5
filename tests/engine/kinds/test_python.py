"""`python` tasks: only callables of the project, called with a TaskContext."""

from __future__ import annotations

import pytest

from engine.kinds.python import resolve
from errors import PermanentError


def test_resolves_project_callables() -> None:
    assert resolve("engine.kinds.python:noop").__name__ == "noop"


@pytest.mark.parametrize(("path", "message"), [
    ("os:system", "not part of the project"),
    ("json:dumps", "not part of the project"),
    ("engine.kinds.nope:run", "module engine.kinds.nope not found"),
    ("engine.kinds.python:missing", "missing is not a callable"),
])
def test_refuses_anything_else(path: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        resolve(path)
