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

    A server already serving the folder is used as it is (what every `caf` command after the
    first finds): its socket is read from `postmaster.pid`, without pgserver's start-up (its
    import, an inter-process lock, a permission walk over its binaries, a handle file).

    Args:
        data_dir: folder for the cluster (kept short: unix socket paths are limited to ~107 chars).
        stop_at_exit: stop the server when this process exits (tests); otherwise it keeps
            running for the next command, like a local service.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_env(data_dir)
    pgdata = data_dir / "pg"
    socket = None if stop_at_exit else running_socket(pgdata)
    if socket is None:
        socket = _start_server(pgdata, stop_at_exit=stop_at_exit)
    if len(str(socket)) > 107:
        raise TransientError(f"unix socket path too long ({len(str(socket))} chars): {socket}")
    return f"postgresql+pg8000://postgres@/postgres?unix_sock={socket}"


def _start_server(pgdata: Path, *, stop_at_exit: bool) -> Path:
    import pgserver  # heavy and local-only: imported on demand

    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
        info = server.get_postmaster_info()
    except Exception as exc:  # pgserver raises plain exceptions on start failures
        raise TransientError(f"embedded PostgreSQL under {pgdata} did not start: {exc}") from exc
    return Path(info.socket_dir) / f".s.PGSQL.{info.port}"


def running_socket(pgdata: Path) -> Path | None:
    """The unix socket of a postmaster ready and serving `pgdata`, or None (not running, starting,
    stopped uncleanly, or its pid now someone else's): then pgserver starts it."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), lines[3].strip(), lines[4].strip(), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    socket = Path(socket_dir) / f".s.PGSQL.{port}"
    if status != "ready" or not port or not socket_dir or not socket.exists():
        return None
    return socket if _postgres_serving(pid, pgdata.resolve()) else None


def _postgres_serving(pid: int, pgdata: Path) -> bool:
    """Whether process `pid` is a postgres started on `pgdata` (pg_ctl passes it as `-D`)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():  # Linux: no psutil import needed
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
    else:
        import psutil

        try:
            args = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
    return bool(args) and Path(args[0]).name == "postgres" and str(pgdata) in args


def with_database(url: str, name: str) -> str:
    """The same server URL pointed at database `name`."""
    return url.replace("@/postgres?", f"@/{name}?", 1)


def ensure_database(url: str, name: str) -> None:
    """CREATE DATABASE `name` if it does not exist (name validated as an identifier).

    Tried first as one plain driver connection to `name` itself (what every command after the
    first finds), not an SQLAlchemy engine whose first connect also runs its dialect's set-up queries.
    """
    if _connects(with_database(url, name)):
        return
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


def _connects(url: str) -> bool:
    """Whether the database of a pg8000 URL accepts a connection; False only when it does not exist."""
    import pg8000.dbapi
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    unix_sock = parsed.query.get("unix_sock")
    try:
        conn = pg8000.dbapi.connect(user=parsed.username or "postgres", password=parsed.password,
                                    host=parsed.host or "localhost", port=parsed.port or 5432,
                                    database=parsed.database,
                                    unix_sock=unix_sock if isinstance(unix_sock, str) else None)
    except (pg8000.dbapi.DatabaseError, pg8000.dbapi.InterfaceError) as exc:
        # pg8000 may report the server's refusal as the network error of closing afterwards.
        seen: BaseException | None = exc
        while seen is not None:
            details = seen.args[0] if seen.args and isinstance(seen.args[0], dict) else {}
            if details.get("C") == "3D000":  # invalid_catalog_name: the database does not exist yet
                return False
            seen = seen.__cause__ or seen.__context__
        raise
    conn.close()
    return True


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
