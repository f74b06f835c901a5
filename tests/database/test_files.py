"""The `files` claim: a lease taken over after it ran out leaves the old claim powerless."""

from __future__ import annotations

from sqlalchemy import select, text

from database import files
from database.models import File
from database.session import unit_of_work
from values.messages import ObjectRef

REF = ObjectRef(bucket="landing", name="sales/orders/day1.csv", generation=7, size=10)


def claim(deps) -> files.Claim:
    with unit_of_work(deps.sessions) as session:
        return files.claim_file(session=session, ref=REF, lease_seconds=60)


def finish(deps, file_id: int, token: str, status: str) -> bool:
    with unit_of_work(deps.sessions) as session:
        return files.finish(session=session, file_id=file_id, token=token, status=status)


def row(deps) -> tuple[str, str | None]:
    with deps.sessions() as session:
        file = session.scalars(select(File)).one()
        return file.status, file.claim_token


def test_a_stale_claim_cannot_finish_once_its_lease_was_taken_over(deps) -> None:
    stale = claim(deps)
    assert stale.state == "claimed" and stale.token
    assert claim(deps).state == "busy"  # within the lease nobody else may take it
    with deps.engine.begin() as conn:  # the first worker stalls past its lease
        conn.execute(text("UPDATE files SET claimed_at = now() - interval '2 minutes'"))
    fresh = claim(deps)
    assert (fresh.state, fresh.file_id, fresh.attempts) == ("claimed", stale.file_id, 2)
    assert fresh.token and fresh.token != stale.token

    assert finish(deps, stale.file_id, stale.token, "ERROR") is False  # the old worker wakes up: dropped
    assert row(deps) == ("PROCESSING", fresh.token)
    assert finish(deps, fresh.file_id, fresh.token, "SUCCESS") is True
    assert row(deps)[0] == "SUCCESS"
    assert finish(deps, fresh.file_id, fresh.token, "ERROR") is False  # a finished file stays finished
    assert row(deps)[0] == "SUCCESS"


def test_the_archive_location_is_recorded_verbatim_whatever_the_object_name(deps) -> None:
    from database.direct import direct

    taken = claim(deps)
    uri = "file:///b/archive/it's \\'; DROP TABLE files; -- $$ é\t.csv"  # names are user data
    with direct(deps.sessions) as connection:
        files.record_archived(connection, file_id=taken.file_id, uri=uri)
    with deps.sessions() as session:
        assert session.scalars(select(File.archived_uri)).one() == uri
