"""The embedded PostgreSQL stops when asked, even though `start` leaves it running for the next command."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psutil

from database import embedded


def _postgres_serving(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_stop_ends_a_server_started_to_outlive_its_process() -> None:
    # Its own short folder: unix socket paths are limited to ~107 characters.
    with tempfile.TemporaryDirectory(prefix="caf-pg-") as tmp:
        data_dir = Path(tmp)
        url = embedded.start(data_dir, stop_at_exit=False)
        assert url.startswith("postgresql+pg8000://")
        pgdata = (data_dir / "pg").resolve()
        assert _postgres_serving(pgdata), "the server did not start"
        assert embedded.stop(data_dir) is True
        assert _postgres_serving(pgdata) == []
        assert embedded.stop(data_dir) is False  # nothing left to stop
