"""The one retry-or-drop rule: every failure is either permanent or transient.

Permanent errors (bad file, unknown table, malformed message) are recorded and acknowledged:
redelivering them would fail the same way. Transient errors (database or warehouse
unreachable, HTTP 5xx / 429) propagate so the platform redelivers the event.

Adapters translate vendor exceptions into these two types at their edge; handlers and the
pipeline never import vendor exception classes.
"""

from __future__ import annotations


class CafError(Exception):
    """Base of all CAF errors."""


class PermanentError(CafError):
    """Retrying cannot help: record the failure and acknowledge the event."""


class TransientError(CafError):
    """Retrying later may help: raise so that the platform redelivers the event."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(PermanentError):
    """The configuration is invalid; the message names the offending key."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header value (delta-seconds or HTTP-date), None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils
    from datetime import UTC, datetime

    try:
        return max(0.0, (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def is_transient_http_status(status: int) -> bool:
    """HTTP statuses worth retrying: throttling, timeouts and server errors."""
    return status in (408, 429) or status >= 500
