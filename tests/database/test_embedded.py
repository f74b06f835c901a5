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


def test_a_running_server_is_reused_as_it_is_and_a_stale_pid_file_is_not_trusted() -> None:
    import os
    import subprocess
    import sys

    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="caf-pg-") as tmp:
        data_dir = Path(tmp)
        url = embedded.start(data_dir, stop_at_exit=False)
        try:
            # What the next `caf` command does: a fresh process finds the server without pgserver.
            probe = ("import sys; from pathlib import Path; from database import embedded; "
                     "print(embedded.start(Path(sys.argv[1]))); print('pgserver' in sys.modules)")
            out = subprocess.run([sys.executable, "-c", probe, tmp], capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parents[2]).stdout.split()
            assert out == [url, "False"]

            embedded.ensure_database(url, "caf_reused")  # created
            embedded.ensure_database(url, "caf_reused")  # found: nothing to do
            engine = create_engine(embedded.with_database(url, "caf_reused"))
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar() == "caf_reused"
            engine.dispose()

            pgdata = data_dir / "pg"
            assert embedded.running_socket(pgdata) is not None
            pid_file = pgdata / "postmaster.pid"
            real = pid_file.read_text()
            lines = real.splitlines()
            pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")  # the pid now someone else's
            try:
                assert embedded.running_socket(pgdata) is None
            finally:
                pid_file.write_text(real)
        finally:
            assert embedded.stop(data_dir) is True
        assert embedded.running_socket(data_dir / "pg") is None
        try:  # stopped: the next command's pgserver starts it again
            out = subprocess.run([sys.executable, "-c", probe, tmp], capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parents[2]).stdout.split()
            assert out == [url, "True"] and embedded.running_socket(data_dir / "pg") is not None
        finally:
            assert embedded.stop(data_dir) is True
