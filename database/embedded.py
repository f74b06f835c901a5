"""The embedded local PostgreSQL (pgserver wheel): started on demand under `.local/`, unix socket."""

from __future__ import annotations

import os
from pathlib import Path

from errors import TransientError


def _prepare_env(data_dir: Path) -> None:
    runtime = data_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def start(data_dir: Path, *, stop_at_exit: bool = False) -> str:
    """Start (or attach to) the embedded server; return a pg8000 SQLAlchemy URL to `postgres`.

    Args:
        data_dir: folder for the cluster (kept short: unix socket paths are limited to ~107 chars).
        stop_at_exit: stop the server when this process exits (tests); otherwise it keeps
            running for the next command, like a local service.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_env(data_dir)
    import pgserver  # heavy and local-only: imported on demand
    pgdata = data_dir / "pg"
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
        info = server.get_postmaster_info()
    except Exception as exc:  # pgserver raises plain exceptions on start failures
        raise TransientError(f"embedded PostgreSQL under {pgdata} did not start: {exc}") from exc
    socket = Path(info.socket_dir) / f".s.PGSQL.{info.port}"
    if len(str(socket)) > 107:
        raise TransientError(f"unix socket path too long ({len(str(socket))} chars): {socket}")
    return f"postgresql+pg8000://postgres@/postgres?unix_sock={socket}"


def with_database(url: str, name: str) -> str:
    """The same server URL pointed at database `name`."""
    return url.replace("@/postgres?", f"@/{name}?", 1)


def ensure_database(url: str, name: str) -> None:
    """CREATE DATABASE `name` if it does not exist (name validated as an identifier)."""
    from sqlalchemy import create_engine, text

    from values.identifiers import quote_pg_ident

    engine = create_engine(url, isolation_level="AUTOCOMMIT", hide_parameters=True)
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(text(f"CREATE DATABASE {quote_pg_ident(name)}"))
    finally:
        engine.dispose()


def stop(data_dir: Path, *, timeout: float = 30.0) -> bool:
    """Stop the embedded server under data_dir, whoever attached to it (tests; `caf` leaves it running).

    pgserver stops a server only when the last process that attached to it detaches with a
    cleanup mode, and the handle `start(stop_at_exit=False)` registered never does, so asking
    pgserver leaves the server running after the caller exits. The postmaster named in
    `postmaster.pid` is sent SIGINT (PostgreSQL's "fast" shutdown: clients disconnected, data
    flushed) and waited for. Returns True when a running server was stopped.
    """
    import signal

    import psutil
    from pgserver.utils import PostmasterInfo

    pgdata = (data_dir / "pg").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    process = info.process if info is not None else None
    if process is None:
        return False
    # A stale postmaster.pid may name a pid reused by another program: only a postgres serving
    # this data directory is signalled.
    try:
        if process.name() != "postgres" or str(pgdata) not in " ".join(process.cmdline()):
            return False
        process.send_signal(signal.SIGINT)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        process.kill()
    return True
