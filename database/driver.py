"""pg8000 on the wire: one round trip per statement, each prepared once, and a ping only after idling.

pg8000 1.31 sends a parameterised statement as three round trips (Parse + Sync, Describe + Sync,
Bind + Execute + Sync) and a commit as three more; SQLAlchemy's `pool_pre_ping` adds one on
every checkout. A file's ingestion is a dozen short transactions, so that was ~100 round trips
per file. PostgreSQL's extended protocol allows the whole statement in one flight — Parse, Bind,
Describe (portal), Execute, Sync — with errors reported once, at the Sync, exactly as before
(the server skips the rest of the flight after an error); the `begin transaction` pg8000 sends
before a transaction's first statement travels in that statement's flight. Each distinct
statement is prepared (a named Parse) the first time a connection runs it and only bound and
executed afterwards (its row description kept from the first run): the server's parse and
analysis, a good part of its work for the short statements here, happen once per connection;
each execution is still planned with its values (`plan_cache_mode = force_custom_plan`),
exactly as the unnamed statement was. `install` applies all of this to every
connection of an engine, whatever creates it (a URL, or the Cloud SQL connector), and replaces
the per-checkout ping by one that runs only when the connection sat idle for a while: a
connection that died in the middle of a burst fails its statement, which is a TransientError
(the event is redelivered) and makes the pool discard it.

The pieces used here are pg8000's protocol methods (`send_PARSE`, `send_BIND`, ...), stable
across 1.2x–1.31 and pinned in requirements.txt; tests/database/test_driver.py checks them
against the real server: results and types, errors and the transaction state after them, COPY.
"""

from __future__ import annotations

import contextlib
import functools
import time
import types
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

IDLE_BEFORE_PING_SECONDS = 10.0
MAX_PREPARED_PER_CONNECTION = 256  # distinct statements kept prepared on one connection (LRU)
PLAN_EVERY_EXECUTION = "SET plan_cache_mode = force_custom_plan"
_CHECKED_IN = "caf_checked_in"


_BEGIN = "begin transaction"  # what pg8000's cursor sends (simple protocol) before a transaction's first statement


def _execute_in_one_flight(self: Any, statement: str, vals: Any = (), oids: Any = (), stream: Any = None) -> Any:
    """pg8000 `CoreConnection.execute_unnamed`, sent as one flight of a statement prepared once per connection.

    First use: Parse (named) + Bind + Describe + Execute + Sync, and the row description is
    kept; later uses send only Bind + Execute + Sync: the server neither parses nor analyses
    the text again, nor describes its rows.
    """
    from pg8000 import core

    if stream is not None:  # COPY: pg8000's own exchange (rare; not worth a second protocol path)
        _read_replies(self, None)
        return core.CoreConnection.execute_unnamed(self, statement, vals=vals, oids=oids, stream=stream)
    prepared: OrderedDict[tuple[str, tuple[int, ...]], _Prepared] = self.__dict__.setdefault(
        "_caf_prepared", OrderedDict())
    key = (statement, tuple(oids))
    unprepared = getattr(self, "_caf_unprepared", False)  # the unnamed statement, parsed every time
    known = None if unprepared else prepared.get(key)
    context = core.Context(statement)
    if known is None:
        if unprepared:
            name = core.NULL_BYTE
        else:
            while len(prepared) >= MAX_PREPARED_PER_CONNECTION:  # the least recently used goes
                self._send_message(core.CLOSE, core.STATEMENT + prepared.popitem(last=False)[1].name)
            self._caf_parses = getattr(self, "_caf_parses", 0) + 1
            name = f"caf_{self._caf_parses}".encode("ascii") + core.NULL_BYTE
        self.send_PARSE(name, statement, oids)
        self.send_BIND(name, core.make_params(self.py_types, vals))
        self._send_message(core.DESCRIBE, core.PORTAL + core.NULL_BYTE)
    else:
        prepared.move_to_end(key)
        self.send_BIND(known.name, core.make_params(self.py_types, vals))
        if known.columns is not None:  # what the Describe of the first run said
            context.columns, context.input_funcs, context.rows = known.columns, known.input_funcs, []
    self.send_EXECUTE()
    core._write(self._sock, core.SYNC_MSG)
    try:
        _read_replies(self, context)
    except core.DatabaseError as exc:
        if _sqlstate(exc) == "0A000":  # "cached plan must not change result type": a migration ran meanwhile
            prepared.clear()  # prepare everything again; this statement's transaction failed (a retry works)
        raise
    if known is None and not unprepared:  # (a failed flight may leave its statement behind: unique name)
        prepared[key] = _Prepared(name, context.columns, context.input_funcs)
    return context


@dataclass(frozen=True)
class _Prepared:
    name: bytes
    columns: Any  # pg8000's row description (None: the statement returns no rows)
    input_funcs: Any


def _sqlstate(exc: Exception) -> str | None:
    detail = exc.args[0] if exc.args else None
    return detail.get("C") if isinstance(detail, dict) else None


def _execute_simple(self: Any, statement: str) -> Any:
    """pg8000 `execute_simple`, except that its `begin transaction` travels with the next statement."""
    from pg8000 import core

    context = core.Context(statement)
    self.send_QUERY(statement)
    if statement == _BEGIN and getattr(self, "_caf_begin", None) is None:
        self._caf_begin = context  # replies read by the statement the cursor sends next, in the same flight
        return context
    _read_replies(self, context)
    return context


def _read_replies(self: Any, context: Any) -> None:
    """Flush what is buffered and read the replies: a deferred BEGIN's first, then `context`'s."""
    from pg8000 import core

    core._flush(self._sock)
    begin, self._caf_begin = getattr(self, "_caf_begin", None), None
    if begin is not None:
        try:
            self.handle_messages(begin)
        except Exception:
            if context is not None:
                with contextlib.suppress(Exception):
                    self.handle_messages(context)  # the statement's replies are on the wire too: drain them
            raise
    if context is not None:
        self.handle_messages(context)


@functools.lru_cache(maxsize=2048)
def _placeholders(style: str, query: str) -> str:
    from pg8000 import dbapi

    return str(dbapi.convert_paramstyle(style, query, ())[0])


def _convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
    """pg8000's placeholder rewrite, which scans the SQL text in Python, once per distinct statement."""
    from pg8000 import dbapi

    if style != "format":  # the values' order depends on the names: not cached
        return dbapi.convert_paramstyle(style, query, args)  # type: ignore[no-any-return]
    return _placeholders(style, query), args


def install(engine: Engine) -> None:
    """One-flight statements and idle-only pings on every pg8000 connection `engine` opens.

    The engine must be created with `pool_pre_ping=False`; the checkout ping here replaces it.
    """
    from pg8000 import legacy
    from pg8000.exceptions import DatabaseError
    from sqlalchemy import event
    from sqlalchemy import exc as sa_exc

    legacy.convert_paramstyle = _convert_paramstyle  # module global pg8000's cursor calls; idempotent

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute_unnamed = types.MethodType(_execute_in_one_flight, dbapi_connection)
        dbapi_connection.execute_simple = types.MethodType(_execute_simple, dbapi_connection)
        # Plan every execution with its values, as an unnamed statement is: a generic plan would
        # change what some statements mean (ON CONFLICT on a partial index whose predicate is
        # parameterised cannot be inferred without the values). Parsing is still saved. A server
        # without the setting (PostgreSQL < 12) gets unnamed statements, parsed every time.
        try:
            dbapi_connection.execute_simple(PLAN_EVERY_EXECUTION)
        except DatabaseError:
            dbapi_connection._caf_unprepared = True
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(_CHECKED_IN, 0.0) < IDLE_BEFORE_PING_SECONDS:
            return
        try:
            dbapi_connection.execute_simple("SELECT 1")  # simple protocol: no transaction is opened
        except Exception as exc:
            # The pool discards this connection and checks out (connects) another.
            raise sa_exc.DisconnectionError(f"idle connection failed its ping: {type(exc).__name__}") from exc
