"""Logging: JSON lines for Cloud Logging in production, readable text locally.

Labels (bucket, object, generation, batch, task, event id) are bound to the current event with
`bind()` and appear on every line logged while handling it. Secrets never reach a log line:
the formatter redacts values of known secret keys and URL passwords.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_labels: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("caf_labels", default=None)
_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("caf_trace", default=None)

# Cloud Logging severities keyed by Python level.
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
# Structured fields callers may pass with `extra=` that are copied into the JSON payload.
_FIELDS = (
    "error_kind", "rows_read", "rows_loaded", "rows_rejected", "bytes", "duration_ms",
    "status", "reason", "table", "metric",
)
_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)@", re.IGNORECASE)
_SECRET_KV = re.compile(
    r"(?P<key>(?:password|passwd|secret|token|api[_-]?key|client_secret|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<val>[^\s\"',}&]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Mask URL passwords and `key=value` secrets in a log message."""
    text = _SECRET_URL.sub(r"\g<scheme>***@", text)
    return _SECRET_KV.sub(r"\g<key>***", text)


@contextlib.contextmanager
def bind(**labels: Any) -> Iterator[None]:
    """Attach labels to every log line emitted inside the block (per event / task)."""
    merged = {**(_labels.get() or {}), **{k: str(v) for k, v in labels.items() if v is not None}}
    token = _labels.set(merged)
    try:
        yield
    finally:
        _labels.reset(token)


def set_trace(trace: str | None) -> contextvars.Token[str | None]:
    return _trace.set(trace)


def current_labels() -> dict[str, str]:
    return dict(_labels.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging parses from stdout."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": redact(message),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = current_labels()
        if labels:
            payload["logging.googleapis.com/labels"] = labels
        trace = _trace.get()
        if trace:
            payload["logging.googleapis.com/trace"] = trace
        for field in _FIELDS:
            if hasattr(record, field):
                payload[field] = getattr(record, field)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Readable local lines: time, level, message and the bound labels."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.fromtimestamp(record.created):%H:%M:%S} {record.levelname:<7} {record.getMessage()}"
        labels = current_labels()
        if labels:
            base += "  [" + " ".join(f"{k}={v}" for k, v in labels.items()) + "]"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return redact(base)


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Install one handler on the root logger; idempotent."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr if fmt == "text" else sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("caf")
    root.handlers = [h for h in root.handlers if h.get_name() != "caf"] + [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "google", "werkzeug", "alembic.runtime.migration", "gcp_storage_emulator"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
