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
# Every repetition before a fixed part is bounded: unbounded ones made redact() quadratic (a 1 MB
# message of letters took hours: each start position scanned to the end looking for "://").
_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,30}://[^:/@\s]{1,256}:)(?P<pw>[^@\s]{1,1024})@",
                         re.IGNORECASE)
_SECRET_KV = re.compile(
    r"(?P<key>(?:password|passwd|secret|token|api[_-]?key|client_secret|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<val>[^\s\"',}&]+)",
    re.IGNORECASE,
)
# `Authorization: Bearer <token>` / `Basic <base64>`: the key pattern above would mask only the
# scheme word. A bearer token has a digit or a symbol in it and `Basic` is matched as HTTP writes
# it, which keeps prose ("bearer of", "basic checks") readable.
_SECRET_BEARER = re.compile(r"\b(?P<scheme>bearer)(?P<sep>\s+)(?=[a-z]*[0-9._~+/=-])[a-z0-9._~+/=-]{8,}",
                            re.IGNORECASE)
_SECRET_BASIC = re.compile(r"\b(?P<scheme>Basic)(?P<sep>\s+)[A-Za-z0-9+/]{8,}={0,2}")
# A JWT (ID / access token) anywhere: three base64url parts, the first two JSON objects.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_LABEL_MAX = 1100  # characters of a label value (object names are up to 1024 bytes)
MAX_MESSAGE_CHARS = 8192
"""A log message longer than this is cut, with a note saying how much was cut (a 1 MB header or
attribute quoted in an error must not make a 1 MB log line)."""
MAX_TRACEBACK_CHARS = 16384  # an exception's text: its head and its tail are kept
_TRACE = re.compile(r"[\x21-\x7e]{1,256}")  # a trace id / traceparent: short and printable


def redact(text: str) -> str:
    """Mask URL passwords, bearer / basic credentials, JWTs and `key=value` secrets in a log message."""
    text = _SECRET_URL.sub(r"\g<scheme>***@", text)
    text = _SECRET_BEARER.sub(r"\g<scheme>\g<sep>***", text)
    text = _SECRET_BASIC.sub(r"\g<scheme>\g<sep>***", text)
    text = _JWT.sub("***", text)
    return _SECRET_KV.sub(r"\g<key>***", text)


def cap(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` redacted, and cut to about `limit` characters with a note of how many were cut.

    Cut before redacting (redacting a megabyte is slow), back to a separator: a secret cut in
    half is no longer recognisable by its pattern, so the partial last token is dropped.
    """
    if len(text) <= limit:
        return redact(text)
    head = _head(text, limit)
    return f"{redact(head)} …[cut: {len(text) - len(head)} more characters]"


def _cap_middle(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """An exception's text: redacted head and tail (where the exception itself is) around a cut."""
    if len(text) <= limit:
        return redact(text)
    head, tail = _head(text, limit // 2), _tail(text, limit // 2)
    return f"{redact(head)}\n…[cut: {len(text) - len(head) - len(tail)} characters]…\n{redact(tail)}"


_SEPARATORS = re.compile(r"[\s,;\"'()\[\]{}<>]")
_TOKEN_MAX = 512  # longer than any secret the patterns recognise at a cut


def _head(text: str, limit: int) -> str:
    window = min(_TOKEN_MAX, limit // 2)
    separators = [m.start() for m in _SEPARATORS.finditer(text, limit - window, limit)]
    return text[:separators[-1] + 1] if separators else text[:limit - window]


def _tail(text: str, limit: int) -> str:
    window = min(_TOKEN_MAX, limit // 2)
    start = len(text) - limit
    found = _SEPARATORS.search(text, start, start + window)
    return text[found.end():] if found else text[start + window:]


@contextlib.contextmanager
def bind(**labels: Any) -> Iterator[None]:
    """Attach labels to every log line emitted inside the block (per event / task)."""
    # Bounded: a label comes from an event (a hostile 10 MB event id must not repeat on every line).
    merged = {**(_labels.get() or {}), **{k: str(v)[:_LABEL_MAX] for k, v in labels.items() if v is not None}}
    token = _labels.set(merged)
    try:
        yield
    finally:
        _labels.reset(token)


def set_trace(trace: str | None) -> contextvars.Token[str | None]:
    """Bind a trace id to the lines logged in this context; anything not short and printable is ignored."""
    return _trace.set(trace if trace and _TRACE.fullmatch(trace) else None)


def current_labels() -> dict[str, str]:
    return dict(_labels.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging parses from stdout."""

    def format(self, record: logging.LogRecord) -> str:
        message = cap(record.getMessage())
        if record.exc_info:
            message = f"{message}\n{_cap_middle(self.formatException(record.exc_info))}"
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": redact(message),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = current_labels()
        if labels:
            payload["logging.googleapis.com/labels"] = {k: redact(v) for k, v in labels.items()}
        trace = _trace.get()
        if trace:
            payload["logging.googleapis.com/trace"] = trace
        for field in _FIELDS:
            if hasattr(record, field):
                value = getattr(record, field)
                payload[field] = redact(value) if isinstance(value, str) else value
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Readable local lines: time, level, message and the bound labels."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.fromtimestamp(record.created):%H:%M:%S} {record.levelname:<7} {cap(record.getMessage())}"
        labels = current_labels()
        if labels:
            base += "  [" + " ".join(f"{k}={v}" for k, v in labels.items()) + "]"
        if record.exc_info:
            base += "\n" + _cap_middle(self.formatException(record.exc_info))
        return redact(base)


class _StdStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stdout / sys.stderr, looked up per record (as logging's last resort
    does), so a replaced stream never leaves a handler writing to a closed one. A failing write
    reports itself in one line: the default `handleError` prints the record's raw arguments to
    stderr, unredacted, which would bypass the formatter's secret masking."""

    def __init__(self, name: str) -> None:
        self._stream_name = name
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:  # set by StreamHandler.__init__; the stream is looked up instead
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        if logging.raiseExceptions and sys.__stderr__ is not None:
            error = type(sys.exc_info()[1]).__name__
            with contextlib.suppress(Exception):
                sys.__stderr__.write(f"--- logging error: {error} while writing a record of {record.name} ---\n")


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Install one handler on the root logger; idempotent."""
    root = logging.getLogger()
    handler = _StdStreamHandler("stderr" if fmt == "text" else "stdout")
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("caf")
    root.handlers = [h for h in root.handlers if h.get_name() != "caf"] + [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "google", "werkzeug", "alembic.runtime.migration", "gcp_storage_emulator"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
