"""Transactional outbox: events written with the state change they announce, published after.

`enqueue` runs inside the caller's unit of work; `publish_pending` runs after commit and marks
what it published. A crash or publisher outage between the two leaves rows that the next call
(any event, or a sweep) publishes: at-least-once, never lost. Consumers are idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from database.models import Outbox

if TYPE_CHECKING:
    from adapters.publisher.base import Publisher

log = logging.getLogger("caf.outbox")


def enqueue(*, session: Session, event_type: str, payload: dict[str, Any],
            attributes: dict[str, str] | None = None, not_before: datetime | None = None,
            tenant_id: str | None = None) -> int:
    """Record an event to publish once the surrounding transaction commits."""
    attrs = dict(attributes or {})
    if not_before is not None:
        attrs["not_before"] = not_before.isoformat()
    row = Outbox(event_type=event_type, payload=payload, attributes=attrs)
    if tenant_id:
        row.tenant_id = tenant_id
    session.add(row)
    session.flush()
    return row.id


def publish_pending(*, session_factory: Any, publisher: Publisher, limit: int = 500,
                    ids: list[int] | None = None) -> int:
    """Publish unpublished outbox rows (oldest first); returns how many were published.

    Rows are locked with SKIP LOCKED so concurrent instances never publish the same row at once.
    A publish failure stops the sweep and leaves the rest for later (TransientError propagates
    only when `ids` were asked for explicitly, i.e. the caller's own events).
    """
    from adapters.publisher.base import OutgoingMessage
    from database.session import unit_of_work
    from errors import TransientError
    from handlers.messages import parse_time

    published = 0
    with unit_of_work(session_factory) as session:
        query = select(Outbox).where(Outbox.published_at.is_(None)).order_by(Outbox.id).limit(limit)
        if ids is not None:
            query = query.where(Outbox.id.in_(ids))
        rows = session.scalars(query.with_for_update(skip_locked=True)).all()
        for row in rows:
            attrs = dict(row.attributes or {})
            not_before = parse_time(attrs.pop("not_before", None))
            message = OutgoingMessage(row.event_type, row.payload, attrs, not_before=not_before)
            try:
                publisher.publish(message)
            except TransientError:
                log.warning("publish of outbox event %s failed; left for the next sweep", row.id)
                if ids is not None:
                    session.commit()
                    raise
                break
            session.execute(update(Outbox).where(Outbox.id == row.id).values(published_at=_now()))
            published += 1
    return published


def _now() -> Any:
    from sqlalchemy import func

    return func.now()
