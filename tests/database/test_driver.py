"""database.driver against the real server: one flight per statement behaves like pg8000's own exchange.

What it stands in for: a statement whose reply is decoded wrongly (types, row counts), an error
that leaves the connection unusable or the transaction half-open, and a connection the server
dropped while it sat in the pool.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, exc, text

from database import driver
from database.session import unit_of_work
from errors import TransientError


@pytest.fixture
def tuned(database_url: str) -> Any:
    eng = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    driver.install(eng)
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS driver_probe"))
        conn.execute(text("CREATE TABLE driver_probe (id int PRIMARY KEY, name text NOT NULL)"))
    yield eng
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS driver_probe"))
    eng.dispose()


class CountingSocket:
    """The connection's socket, counting flushes: pg8000 flushes once per flight it then waits for."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.flushes = sock, 0

    def flush(self) -> None:
        self.flushes += 1
        self.sock.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def round_trips(conn: Any, run: Any) -> int:
    """How many flights the pg8000 connection under `conn` sent (and waited for) while `run` ran."""
    raw = conn.connection.dbapi_connection
    counting = raw._sock = CountingSocket(raw._sock)
    try:
        run()
    finally:
        raw._sock = counting.sock
    return counting.flushes


def test_values_of_every_kind_come_back_decoded(tuned) -> None:
    at = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
    with tuned.connect() as conn:
        for _ in range(2):  # described by the server on the first run, from the kept description after
            row = conn.execute(text(
                "SELECT CAST(:i AS bigint), CAST(:t AS text), CAST(:d AS numeric), CAST(:ts AS timestamptz), "
                "CAST(:b AS boolean), CAST(:n AS text), CAST(:j AS jsonb), ARRAY[1, 2]"),
                {"i": 2**40, "t": "it's \\ \"quoted\" é", "d": Decimal("12.345"), "ts": at, "b": True,
                 "n": None, "j": '{"a": [1, null]}'}).one()
            assert tuple(row) == (2**40, "it's \\ \"quoted\" é", Decimal("12.345"), at, True, None,
                                  {"a": [1, None]}, [1, 2])


def test_row_counts_and_statements_without_rows(tuned) -> None:
    with tuned.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES (:a, 'x'), (:b, 'y')"), {"a": 1, "b": 2})
        updated = conn.execute(text("UPDATE driver_probe SET name = :n WHERE id >= :low"), {"n": "z", "low": 1})
        assert updated.rowcount == 2
        assert conn.execute(text("DELETE FROM driver_probe WHERE id = :id"), {"id": 9}).rowcount == 0
    with tuned.connect() as conn:
        assert conn.execute(text("SELECT id, name FROM driver_probe ORDER BY id")).all() == [(1, "z"), (2, "z")]


def test_a_parameterised_statement_and_its_commit_are_one_round_trip_each(tuned) -> None:
    with tuned.connect() as conn:
        # The transaction's BEGIN travels with its first statement.
        assert round_trips(conn, lambda: conn.execute(text("SELECT CAST(:x AS int)"), {"x": 1}).all()) == 1
        assert round_trips(conn, lambda: conn.execute(text("SELECT name FROM driver_probe WHERE id = :id"),
                                                      {"id": 1}).all()) == 1
        assert round_trips(conn, lambda: conn.execute(text("INSERT INTO driver_probe VALUES (:id, :n)"),
                                                      {"id": 5, "n": "five"})) == 1
        assert round_trips(conn, conn.commit) == 1
    with tuned.connect() as conn:
        assert conn.execute(text("SELECT name FROM driver_probe WHERE id = 5")).scalar_one() == "five"


@pytest.mark.parametrize(("sql", "params", "error"), [
    ("INSERT INTO driver_probe VALUES (:id, :n)", {"id": 1, "n": "again"}, exc.IntegrityError),  # at Execute
    ("SELEC name FROM driver_probe WHERE id = :id", {"id": 1}, exc.ProgrammingError),  # at Parse
    ("SELECT name FROM driver_probe WHERE id = CAST(:id AS int)", {"id": "one"}, exc.DBAPIError),  # at Bind
])
def test_an_error_anywhere_in_the_flight_rolls_back_and_leaves_the_connection_usable(tuned, sql, params,
                                                                                     error) -> None:
    with tuned.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES (1, 'one')"))
    with pytest.raises(error), tuned.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES (:id, 'two')"), {"id": 2})
        conn.execute(text(sql), params)
    with pytest.raises(error), tuned.begin() as conn:  # the failing statement in the BEGIN's own flight
        conn.execute(text(sql), params)
    with tuned.connect() as conn:  # the same (only) pooled connection: clean, and nothing half-written
        assert conn.execute(text("SELECT id FROM driver_probe ORDER BY id")).scalars().all() == [1]
        assert conn.connection.dbapi_connection._transaction_status == b"T"  # this read's own transaction


def test_a_script_without_parameters_runs_in_the_transaction_its_begin_opened(tuned) -> None:
    with tuned.connect() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        cursor.execute("INSERT INTO driver_probe VALUES (3, 'three')")  # simple protocol, after a deferred BEGIN
        assert raw._transaction_status == b"T"
        conn.rollback()
    with tuned.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 0


def test_copy_still_streams_through_pg8000s_own_exchange(tuned) -> None:
    with tuned.begin() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        cursor.execute("COPY driver_probe FROM STDIN WITH (FORMAT csv)", stream=io.BytesIO(b"7,seven\n8,eight\n"))
    with tuned.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 2


def kill_pooled_connection(tuned, database_url: str) -> None:
    with tuned.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(database_url)
    with admin.begin() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()
    admin.dispose()


def test_a_connection_dropped_while_idle_is_replaced_at_checkout(tuned, database_url, monkeypatch) -> None:
    kill_pooled_connection(tuned, database_url)  # e.g. a Cloud SQL failover while the instance idled
    monkeypatch.setattr(driver, "IDLE_BEFORE_PING_SECONDS", 0.0)
    with tuned.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_dropped_mid_burst_fails_its_unit_of_work_as_transient_and_is_discarded(
        tuned, database_url) -> None:
    from sqlalchemy.orm import sessionmaker

    kill_pooled_connection(tuned, database_url)  # no ping within the idle window: the statement finds out
    sessions = sessionmaker(tuned)
    with pytest.raises(TransientError), unit_of_work(sessions) as session:
        session.execute(text("SELECT 1"))
    with unit_of_work(sessions) as session:  # the pool dropped the dead connection: the redelivery works
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def prepared_here(conn: Any) -> list[str]:
    return list(conn.execute(text(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'caf\\_%' ORDER BY prepare_time")).scalars())


def test_a_statement_is_prepared_once_per_connection_and_only_bound_afterwards(tuned) -> None:
    lookup = "SELECT name FROM driver_probe WHERE id = :id"
    with tuned.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES (1, 'one'), (2, 'two')"))
    with tuned.connect() as conn:
        assert [conn.execute(text(lookup), {"id": i}).scalar() for i in (1, 2, 3, 1)] == ["one", "two", None, "one"]
        mine = [s for s in prepared_here(conn) if "driver_probe WHERE id" in s]
        assert mine == ["SELECT name FROM driver_probe WHERE id = $1"]


def test_a_migration_that_changes_a_result_type_fails_one_statement_then_it_is_prepared_again(tuned) -> None:
    lookup = "SELECT id, name FROM driver_probe WHERE id = :id"
    with tuned.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES (1, 'one')"))
        assert conn.execute(text(lookup), {"id": 1}).one() == (1, "one")
    admin = create_engine(str(tuned.url.render_as_string(hide_password=False)))
    with admin.begin() as conn:  # another process migrates while this one keeps its connection
        conn.execute(text("ALTER TABLE driver_probe ALTER COLUMN name TYPE varchar(20)"))
    admin.dispose()
    with pytest.raises(exc.DBAPIError, match="cached plan must not change result type"), tuned.connect() as conn:
        conn.execute(text(lookup), {"id": 1})
    with tuned.connect() as conn:  # the redelivery: prepared afresh
        assert conn.execute(text(lookup), {"id": 1}).one() == (1, "one")


def test_a_connection_keeps_a_bounded_number_of_statements_prepared(tuned, monkeypatch) -> None:
    monkeypatch.setattr(driver, "MAX_PREPARED_PER_CONNECTION", 3)
    with tuned.connect() as conn:
        for i in range(8):
            assert conn.execute(text(f"SELECT CAST(:x AS int) + {i}"), {"x": 1}).scalar() == 1 + i
        assert len(prepared_here(conn)) == 3
        assert conn.execute(text("SELECT CAST(:x AS int) + 0"), {"x": 1}).scalar() == 1  # evicted: prepared again


def test_a_statement_that_failed_to_prepare_fails_the_same_way_next_time(tuned) -> None:
    for _ in range(2):
        with pytest.raises(exc.ProgrammingError, match="syntax error"), tuned.connect() as conn:
            conn.execute(text("SELEC name FROM driver_probe WHERE id = :id"), {"id": 1})


def test_a_statement_planned_with_its_values_keeps_working_however_often_it_runs(tuned) -> None:
    # A generic plan (PostgreSQL's choice after five executions of a prepared statement) cannot
    # infer ON CONFLICT's partial index when the index predicate's values are parameters.
    with tuned.begin() as conn:
        conn.execute(text("ALTER TABLE driver_probe ADD COLUMN status text DEFAULT 'open'"))
        conn.execute(text("CREATE UNIQUE INDEX driver_probe_open ON driver_probe (name) "
                          "WHERE status IN ('open', 'uploading')"))
    with tuned.connect() as conn:
        for i in range(8):
            conn.execute(text("INSERT INTO driver_probe (id, name, status) VALUES (:id, 'n', 'open') "
                              "ON CONFLICT (name) WHERE status IN (:a, :b) DO NOTHING"),
                         {"id": i, "a": "open", "b": "uploading"})
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 1
def test_a_non_durable_unit_of_work_never_makes_the_next_one_non_durable(tuned) -> None:
    from sqlalchemy.orm import sessionmaker

    sessions = sessionmaker(tuned)  # one pooled connection: the next unit of work gets the same one
    with unit_of_work(sessions, durable=False) as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
    with unit_of_work(sessions) as session:  # e.g. the file's final status: waits for its WAL flush
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"


def test_a_server_that_cannot_plan_every_execution_gets_unnamed_statements(database_url, monkeypatch) -> None:
    monkeypatch.setattr(driver, "PLAN_EVERY_EXECUTION", "SET caf_no_such_setting_anywhere = 1")  # as on < 12
    eng = create_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    driver.install(eng)
    try:
        with eng.connect() as conn:
            for i in range(7):  # past the five executions after which a generic plan could be chosen
                assert conn.execute(text("SELECT CAST(:x AS int) + 1"), {"x": i}).scalar() == i + 1
            assert prepared_here(conn) == []
            assert conn.connection.dbapi_connection._transaction_status == b"T"
    finally:
        eng.dispose()
