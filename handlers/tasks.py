"""Pub/Sub routes for CAF's own events (task, dataform, powerbi, file_loaded).

Until the task engine lands, each route records what it received in the log and acknowledges.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handlers.deps import Deps
    from handlers.messages import PubSubMessage

log = logging.getLogger("caf.tasks")


def handle(route: str, message: PubSubMessage, deps: Deps) -> None:
    payload = message.json()
    log.info("received %s event %s: %s", route, message.message_id, sorted(payload))
