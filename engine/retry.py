"""When to try a task again: exponential backoff with jitter, and the not-before guard.

Nothing here sleeps. A retry is a re-published message carrying the next attempt number and a
`not_before` time; the local bus holds it until then, and in production a message delivered
early raises TransientError so Pub/Sub redelivers it later (its own backoff applies; give the
subscription a dead-letter policy with enough delivery attempts for the longest backoff).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from errors import TransientError

# Deliveries this close to their due time run now: clocks of publisher and subscriber differ.
CLOCK_SKEW = timedelta(seconds=1)


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped, with "equal jitter".

    The result lies in [d/2, d] for d = min(cap, base * 2^(attempt-1)) — the same shape as
    tenacity's `wait_exponential` followed by a random half: spread out, never zero.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def retry_at(now: datetime, attempt: int, *, base: float, cap: float, retry_after: float | None = None,
             rng: random.Random | None = None) -> datetime:
    """The not-before time of the next attempt; a server's Retry-After is honoured as a minimum."""
    delay = backoff_seconds(attempt, base=base, cap=cap, rng=rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=delay)


def ensure_due(not_before: datetime | None, now: datetime) -> None:
    """Raise TransientError for a message delivered before its time (Pub/Sub will redeliver)."""
    if not_before is not None and not_before - CLOCK_SKEW > now:
        wait = (not_before - now).total_seconds()
        raise TransientError(f"message not due for another {wait:.0f}s", retry_after=wait)
