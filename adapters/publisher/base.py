"""The publisher port: fan-out of CAF's own events (file loaded, task ready, status checks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

EVENT_TYPES = ("task", "dataform", "powerbi", "file_loaded")


@dataclass(frozen=True)
class OutgoingMessage:
    """Message data is JSON; attributes carry `event_type` (the route) and string metadata."""

    event_type: str
    data: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    not_before: datetime | None = None
    """Earliest delivery time (retries with backoff, status checks); carried as an attribute."""

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        attrs = {**self.attributes, "event_type": self.event_type}
        if self.not_before is not None:
            attrs["not_before"] = self.not_before.isoformat()
        return json.dumps(self.data, separators=(",", ":"), default=str).encode(), attrs


class Publisher(Protocol):
    def publish(self, message: OutgoingMessage) -> str:
        """Publish; returns the message id. Failures raise TransientError."""
        ...

    def close(self) -> None: ...
