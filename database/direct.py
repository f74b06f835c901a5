"""One round trip per transaction on pg8000: simple-protocol scripts and server-side prepared statements.

pg8000 sends a statement with parameters as three round trips (parse, describe + bind, execute),
scans its text in Python to rewrite the placeholders, and commits in three more. The engine's
hot transactions (claim, record a success) are a few statements each, so they are sent as one
simple-protocol query string instead: the statements of a string run as one implicit
transaction, each with a fresh READ COMMITTED snapshot. Their values go into `EXECUTE` of
statements prepared once per connection, written by `sql_literal` — integers, timezone-aware timestamps
and escaped strings only; everything else is refused (a deliberate, tested exception to "values
are parameters", see tests/engine/test_direct_literals.py).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

# A transaction whose commit need not wait for its WAL flush: only where a later durable commit of
# the same flow always follows, or a lost commit is repaired anyway (see `unit_of_work(durable=False)`).
NOT_DURABLE = "SET LOCAL synchronous_commit = off"


class Direct:
    """A pooled pg8000 connection outside any open transaction (see `direct`)."""

    def __init__(self, connection: Any, prepared: set[str]) -> None:
        self._connection = connection
        self._prepared = prepared

    def script(self, sql: str) -> list[Any]:
        """Run `sql` (one or more statements) in one round trip; the rows of every result, in order."""
        return self._connection.execute_simple(sql).rows or []

    def execute(self, statement: Prepared, **values: Any) -> str:
        """`EXECUTE` of `statement` with `values`, for a script; prepares it on this connection once.

        A prepared statement is planned once per connection rather than on every message.
        """
        if statement.name not in self._prepared:
            self._connection.execute_simple(statement.prepare)
            self._prepared.add(statement.name)
        return f"EXECUTE {statement.name}({', '.join(sql_literal(values[n]) for n in statement.params)})"


@dataclass(frozen=True)
class Prepared:
    name: str
    prepare: str
    params: tuple[str, ...]


def prepare_statement(label: str, template: str, **types: str) -> Prepared:
    """`template`'s {placeholders} as the parameters of a server-side prepared statement (`Direct.execute`)."""
    body = template.format(**{n: f"${i}" for i, n in enumerate(types, 1)})
    name = f"caf_{label}_{hashlib.sha256(body.encode()).hexdigest()[:12]}"
    return Prepared(name, f"PREPARE {name} ({', '.join(types.values())}) AS {body}", tuple(types))


@contextlib.contextmanager
def direct(factory: sessionmaker[Session]) -> Iterator[Direct]:
    """A connection of the sessions' engine for `Direct.script`; an error rolls back what is open.

    Connection failures become TransientError (as in `unit_of_work`): the message is redelivered.
    """
    from pg8000.exceptions import DatabaseError, InterfaceError
    from sqlalchemy import exc as sa_exc

    from errors import TransientError

    try:
        proxied = factory.kw["bind"].raw_connection()
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise TransientError(f"metadata database unavailable: {cause}") from exc
    connection = proxied.dbapi_connection
    # The names prepared on this DBAPI connection; SQLAlchemy drops `info` with the connection.
    prepared = proxied.info.setdefault("caf_prepared", set())
    try:
        connection.rollback()  # a no-op, unless a pool pre-ping left its implicit transaction open
        yield Direct(connection, prepared)
    except (InterfaceError, OSError) as exc:
        proxied.invalidate(exc)
        raise TransientError(f"metadata database connection lost: {type(exc).__name__}") from exc
    except BaseException as exc:
        if isinstance(exc, DatabaseError) and "26000" in str(exc):  # prepared statement gone (DISCARD ALL)
            prepared.clear()
        with contextlib.suppress(Exception):
            connection.rollback()  # a script with an explicit BEGIN that failed half-way
        raise
    finally:
        proxied.close()


def sql_literal(value: Any) -> str:
    """`value` as an SQL literal; only the types the engine's own statements need."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: the engine's timestamps are timezone-aware")
        return f"CAST('{value.isoformat()}' AS timestamptz)"
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("PostgreSQL text cannot hold NUL characters")
        # An E'' literal means the same whatever standard_conforming_strings says.
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")
