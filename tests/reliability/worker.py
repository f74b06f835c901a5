"""A separate ingestion worker for the SIGKILL tests (`python -m tests.reliability.worker SPEC_JSON`).

It builds its own Deps against the test's database, DuckDB file and bucket folder, and runs
handlers.raw_file.handle on one object version. At the chosen point it writes its pid to the
marker file and waits to be killed there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _hold(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(600)  # the test kills us here


def _install(pause_at: str, marker: Path) -> None:
    from adapters.storage.local import LocalStorage
    from adapters.warehouse.duckdb import DuckDbWarehouse

    if pause_at == "reading":
        real_open = LocalStorage.open_read

        class HalfThenHold:
            def __init__(self, inner: Any) -> None:
                self.inner, self.left = inner, os.fstat(inner.fileno()).st_size // 2

            def read(self, size: int = -1) -> bytes:
                if self.left <= 0:
                    _hold(marker)
                data = self.inner.read(min(size, self.left) if size >= 0 else self.left)
                self.left -= len(data)
                return data

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.close()

        def open_read(self: Any, bucket: str, name: str, generation: int | None = None) -> Any:
            return HalfThenHold(real_open(self, bucket, name, generation))

        LocalStorage.open_read = open_read  # type: ignore[method-assign]
    elif pause_at == "warehouse_transaction":
        real_connect = DuckDbWarehouse.connect

        class HoldAtCommit:
            def __init__(self, conn: Any) -> None:
                self.conn = conn

            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "COMMIT":  # the old rows are deleted and the new ones inserted, uncommitted
                    _hold(marker)
                return self.conn.execute(sql, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.conn, name)

        @contextlib.contextmanager
        def connect(self: Any) -> Any:
            with real_connect(self) as conn:
                yield HoldAtCommit(conn)

        DuckDbWarehouse.connect = connect  # type: ignore[method-assign]
    elif pause_at == "after_warehouse_commit":
        real_load = DuckDbWarehouse.load

        def load(self: Any, request: Any) -> Any:
            real_load(self, request)
            _hold(marker)

        DuckDbWarehouse.load = load  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown pause point {pause_at!r}")


def main(spec: dict[str, Any]) -> None:
    os.environ["APP_ENV"] = "test"
    from app.deps import Deps
    from config.settings import load_settings
    from handlers import raw_file
    from values.messages import ObjectRef

    settings = load_settings(database_url=spec["database_url"], data_dir=spec["data_dir"],
                             warehouse_url=spec["warehouse_url"], storage_url=spec["storage_url"])
    _install(spec["pause_at"], Path(spec["marker"]))
    ref = ObjectRef(bucket=spec["bucket"], name=spec["name"], generation=spec["generation"], size=spec["size"])
    raw_file.handle(ref, Deps(settings))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
