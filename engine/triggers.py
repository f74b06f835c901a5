"""What starts work in the engine besides a task message: a sweep and a loaded file.

handlers/tasks.py decodes the Pub/Sub message and calls these (scheduled starts go straight to
`scheduler.start_batch`, task runs to `runner.run_message`); the engine owns what they do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from database import batches as batch_db
from database import outbox
from database.session import unit_of_work
from engine import scheduler

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.ports import TaskPorts


def sweep(deps: TaskPorts) -> tuple[int, int]:
    """End the runs whose lease passed, then publish unsent events; returns (runs ended, events sent)."""
    ended = scheduler.sweep_expired(deps)
    sent = outbox.publish_pending(session_factory=deps.sessions, publisher=deps.publisher)
    return ended, sent


def file_loaded(deps: TaskPorts, *, dataset: str, table: str, batch_id: int | None, file_id: int | None,
                registered: str | None = None, tenant: str | None = None) -> tuple[int, list[int]]:
    """Start the batch's tenant's tasks listening to the loaded table; returns (batch id, root runs started).

    `registered`: `dataset.table` as the tenant registered it (what `on_file` lists); `dataset.table`
    is the physical table. Our ingestion always creates the file's batch (which carries the
    tenant); a `file_loaded` event from elsewhere gets one made here for `tenant` (default
    `default`), with the file attached to it when the event names one.
    """
    if batch_id is None:
        from database.tenancy import validate_tenant

        owner = validate_tenant(tenant or "default")
        with unit_of_work(deps.sessions) as session:
            batch_id = batch_db.create_batch(session=session, trigger="file", root=f"{dataset}.{table}",
                                             started_at=deps.clock(), tenant=owner)
            if file_id is not None:
                _attach_file(session, file_id, batch_id)
    return batch_id, scheduler.start_file_batch(deps, batch_id=batch_id, table=registered or f"{dataset}.{table}")


def _attach_file(session: Session, file_id: int, batch_id: int) -> None:
    from sqlalchemy import update

    from database.models import File

    session.execute(update(File).where(File.id == file_id).values(batch_id=batch_id))
