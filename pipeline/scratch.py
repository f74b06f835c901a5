"""A process-wide in-memory DuckDB for work on staged files (key-duplicate checks, rewrites).

Opening an in-memory DuckDB costs ~10 ms, most of a small file's staging; a cursor on one shared
database costs microseconds. Each caller gets its own cursor (cursors are independent
connections to the same database, safe to use from different threads), so nothing is shared
between files but the memory limit.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

MEMORY_LIMIT = "128MB"
_state: dict[str, Any] = {"conn": None, "pid": 0}
_guard = threading.Lock()


@contextlib.contextmanager
def cursor(*, private: bool = False) -> Iterator[Any]:
    """A fresh cursor on the shared in-memory database, closed afterwards.

    `private`: a database of its own, closed afterwards, for work on a large file: DuckDB keeps
    what a query allocated for as long as the database lives (~60 MB after a 10M-row key
    check), which the shared one would then carry into the warehouse load's peak.
    """
    import duckdb

    if private:
        conn = duckdb.connect(config={"memory_limit": MEMORY_LIMIT})
        try:
            yield conn
        finally:
            conn.close()
        return
    with _guard:
        if _state["conn"] is None or _state["pid"] != os.getpid():  # never a parent's after fork
            _state["conn"] = duckdb.connect(config={"memory_limit": MEMORY_LIMIT})
            _state["pid"] = os.getpid()
        cur = _state["conn"].cursor()
    try:
        yield cur
    finally:
        cur.close()
