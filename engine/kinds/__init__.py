"""Task kinds, one small module each; imported on first use (cold starts stay cheap)."""

from __future__ import annotations

import importlib
from typing import cast

from engine.kinds.base import Kind
from errors import PermanentError

MODULES = {
    "sql": "engine.kinds.sql",
    "python": "engine.kinds.python",
    "wait_for_files": "engine.kinds.wait_for_files",
    "dataform": "engine.kinds.dataform",
    "powerbi": "engine.kinds.powerbi",
}
# Kinds whose work continues elsewhere: their check messages use these routes.
CHECK_ROUTES = {"dataform": "dataform", "powerbi": "powerbi"}


def get(kind: str) -> Kind:
    if kind not in MODULES:
        raise PermanentError(f"unknown task kind {kind!r}")
    return cast(Kind, importlib.import_module(MODULES[kind]))
