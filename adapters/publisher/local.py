"""An in-process bus that delivers through the same Pub/Sub handler path as production.

Messages queue until `drain()` (tests, CLI) or the `caf serve` pump delivers them. A message
with `not_before` waits until the bus clock reaches it. A delivery that raises (the transient
path, HTTP 500 in production) is re-queued with a short backoff, as Pub/Sub would redeliver.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from values.messages import OutgoingMessage

log = logging.getLogger("caf.bus")

Deliver = Callable[[bytes, dict[str, str], str], None]


class LocalBus:
    def __init__(self, *, clock: Callable[[], datetime] | None = None, max_redeliveries: int = 5) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._queue: list[tuple[datetime, int, bytes, dict[str, str], int]] = []
        self._ids = itertools.count(1)
        # Message ids unique beyond this bus (another process's bus also starts at 1), as trigger
        # deduplication keys on them.
        self._prefix = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self.deliver: Deliver | None = None
        self.max_redeliveries = max_redeliveries
        self.published: list[OutgoingMessage] = []
        self.dead_letters: list[tuple[bytes, dict[str, str]]] = []

    def publish(self, message: OutgoingMessage) -> str:
        data, attrs = message.encoded()
        due = message.not_before or self._clock()
        with self._lock:
            seq = next(self._ids)
            heapq.heappush(self._queue, (due, seq, data, attrs, 0))
            self.published.append(message)
        return f"{self._prefix}-{seq}"

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_due(self) -> datetime | None:
        with self._lock:
            return self._queue[0][0] if self._queue else None

    def _pop_due(self) -> tuple[datetime, int, bytes, dict[str, str], int] | None:
        with self._lock:
            if self._queue and self._queue[0][0] <= self._clock():
                return heapq.heappop(self._queue)
        return None

    def drain(self, *, limit: int = 100_000) -> int:
        """Deliver every due message (including ones published meanwhile); returns how many."""
        if self.deliver is None:
            raise RuntimeError("LocalBus has no deliver callback")
        delivered = 0
        with self._drain_lock:
            while delivered < limit:
                item = self._pop_due()
                if item is None:
                    break
                _, seq, data, attrs, tries = item
                delivered += 1
                try:
                    self.deliver(data, attrs, f"{self._prefix}-{seq}")
                except Exception as exc:  # noqa: BLE001 - the platform's view: a failed delivery
                    self._redeliver(seq, data, attrs, tries, exc)
        return delivered

    def _redeliver(self, seq: int, data: bytes, attrs: dict[str, str], tries: int, exc: Exception) -> None:
        if tries + 1 >= self.max_redeliveries:
            log.error("message %s dead-lettered after %s deliveries: %s", seq, tries + 1, exc)
            self.dead_letters.append((data, attrs))
            return
        due = self._clock() + timedelta(seconds=min(0.05 * 2**tries, 2.0))
        with self._lock:
            heapq.heappush(self._queue, (due, seq, data, attrs, tries + 1))

    def close(self) -> None:
        return None
