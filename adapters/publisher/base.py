"""The publisher port: fan-out of CAF's own events (file loaded, task ready, status checks).

The message type itself (`values.messages.OutgoingMessage`) lives on the ground floor: the
outbox (database/) records it too.
"""

from __future__ import annotations

from typing import Protocol

from values.messages import OutgoingMessage


class Publisher(Protocol):
    def publish(self, message: OutgoingMessage) -> str:
        """Publish; returns the message id. Failures raise TransientError."""
        ...

    def close(self) -> None: ...
