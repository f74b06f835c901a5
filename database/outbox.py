"""Transactional outbox: events written with the state change they announce, published after.

`enqueue` runs inside the caller's unit of work; `publish_pending` runs after commit and marks
what it published. A crash or publisher outage between the two leaves rows that the next call
(any event, or a sweep) publishes: at-least-once, never lost. Consumers are idempotent.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from database.models import Outbox
from values.messages import OutgoingMessage, parse_time


class Publisher(Protocol):
    """What the outbox needs of the publisher port (adapters/publisher): publish one message."""

    def publish(self, message: OutgoingMessage) -> str: ...

log = logging.getLogger("caf.outbox")


def enqueue(*, session: Session, event_type: str, payload: dict[str, Any],
            attributes: dict[str, str] | None = None, not_before: datetime | None = None,
            tenant_id: str | None = None) -> int:
    """Record an event to publish once the surrounding transaction commits."""
    from database.base import DEFAULT_TENANT

    attrs = dict(attributes or {})
    if not_before is not None:
        attrs["not_before"] = not_before.isoformat()
    return int(session.execute(_enqueue_statement(), {
        "event_type": event_type, "payload": payload, "attributes": attrs,
        "tenant_id": tenant_id or DEFAULT_TENANT}).scalar_one())


@functools.cache
def _enqueue_statement() -> Any:
    """The outbox insert, built once (Core table, bound values): written with every state change."""
    from sqlalchemy import bindparam, insert

    table: Any = Outbox.__table__
    fields = ("event_type", "payload", "attributes", "tenant_id")
    return insert(table).values(**{f: bindparam(f) for f in fields}).returning(table.c.id)


def publish_pending(*, session_factory: Any, publisher: Publisher, limit: int = 500,
                    ids: list[int] | None = None) -> int:
    """Publish unpublished outbox rows (oldest first); returns how many were published.

    Rows are locked with SKIP LOCKED so concurrent instances never publish the same row at once.
    A publish failure stops the sweep and leaves the rest for later (TransientError propagates
    only when `ids` were asked for explicitly, i.e. the caller's own events).
    """
    published, _ = _publish_batch(session_factory=session_factory, publisher=publisher, limit=limit, ids=ids)
    return published


def sweep(*, session_factory: Any, publisher: Publisher, batch_size: int = 500, max_rows: int = 50_000) -> int:
    """Publish every pending outbox row, in batches; returns how many were published.

    For a scheduler (`event_type=sweep` on the Pub/Sub route): events stranded by a publisher
    outage after their transaction committed reach their consumers even if no other event
    comes. Raises TransientError when a publish failed, so that the sweep message is retried.
    """
    from errors import TransientError

    total = 0
    while total < max_rows:
        published, failed = _publish_batch(session_factory=session_factory, publisher=publisher,
                                           limit=min(batch_size, max_rows - total), ids=None)
        total += published
        if failed:
            raise TransientError(f"outbox sweep: publishing failed after {total} event(s); the rest stays "
                                 "pending for the next sweep")
        if published < batch_size:
            break
    if total:
        log.info("outbox sweep published %s stranded event(s)", total)
    return total


def _publish_batch(*, session_factory: Any, publisher: Publisher, limit: int,
                   ids: list[int] | None) -> tuple[int, bool]:
    """Publish up to `limit` pending rows; returns (published, whether a publish failed)."""
    from database.session import unit_of_work
    from errors import TransientError

    published = 0
    with unit_of_work(session_factory) as session:
        query = select(Outbox).where(Outbox.published_at.is_(None)).order_by(Outbox.id).limit(limit)
        if ids is not None:
            query = query.where(Outbox.id.in_(ids))
        rows = session.scalars(query.with_for_update(skip_locked=True)).all()
        for row in rows:
            try:
                publisher.publish(_message(row.event_type, row.payload, row.attributes))
            except TransientError:
                log.warning("publish of outbox event %s failed; left for the next sweep", row.id)
                if ids is not None:
                    session.commit()
                    raise
                return published, True
            session.execute(update(Outbox).where(Outbox.id == row.id).values(published_at=func.now()))
            published += 1
    return published, False


def _message(event_type: str, payload: dict[str, Any], attributes: dict[str, str] | None) -> OutgoingMessage:
    """An outbox row as the message to publish (`not_before` travels as an attribute in the row)."""
    attrs = dict(attributes or {})
    not_before = parse_time(attrs.pop("not_before", None))
    return OutgoingMessage(event_type, payload, attrs, not_before=not_before)


def publish_ids(*, connection: Any, publisher: Publisher, ids: list[int]) -> int:
    """Publish the pending rows `ids` over `connection` (a `database.tasks.Direct`); returns how many.

    `publish_pending(ids=...)` in two round trips instead of a few per row: one statement locks
    (SKIP LOCKED) and marks the rows, they are published, then the transaction commits. A
    TransientError un-marks the rows not yet published, commits the rest and propagates.
    """
    from database.direct import NOT_DURABLE
    from errors import TransientError

    if not ids:
        return 0
    wanted = ",".join(str(int(i)) for i in ids)
    # Not waiting for the WAL flush at commit: if a crash loses the mark, the sweep publishes the
    # event again, and every consumer already takes a message more than once (at-least-once).
    rows = sorted(connection.script(
        f"BEGIN; {NOT_DURABLE};"
        " UPDATE outbox SET published_at = now() WHERE id IN (SELECT id FROM outbox"
        f" WHERE id IN ({wanted}) AND published_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED)"
        " RETURNING id, event_type, payload, attributes"), key=lambda r: int(r[0]))
    published, failed = 0, None
    for ident, event_type, payload, attributes in rows:
        try:
            publisher.publish(_message(event_type, payload, attributes))
        except TransientError as exc:
            log.warning("publish of outbox event %s failed; left for the next sweep", ident)
            failed = exc
            break
        except BaseException:
            connection.script("ROLLBACK")
            raise
        published += 1
    rest = ",".join(str(int(r[0])) for r in rows[published:])
    connection.script((f"UPDATE outbox SET published_at = NULL WHERE id IN ({rest}); " if rest else "") + "COMMIT")
    if failed is not None:
        raise failed
    return published
