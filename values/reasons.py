"""Stable reason labels for errors: one of a few words per failed file or task run.

Log lines carry the label as the `reason` field, so a Cloud Logging log-based metric can count
errors by reason (docs/operations.md); the engine, ingestion, alerts and the operator's metrics
(`handlers/metrics.py`) all label errors the same way.
"""

from __future__ import annotations

import re
from typing import Any

FILE_REASONS = ("no_table", "mapping_mismatch", "bad_rows", "convert", "load", "internal", "other")
TASK_REASONS = ("transform", "dataform", "refresh", "limit", "timeout", "python", "gate", "other")

# First match wins; patterns follow the messages raised by pipeline/ and adapters/warehouse/.
_FILE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
        ("no_table", r"^no table registered"),
        ("internal", r"^internal error"),
        ("bad_rows", r"row\(s\) rejected"),
        ("mapping_mismatch", r"columns do not match|appear from row|is not in warehouse table|"
                             r"is REPEATED but|cannot be loaded as"),
        ("load", r"warehouse|load job|BigQuery|job id|write_mode|write mode|merged but has no keys"),
        ("convert", r"cannot parse|cannot read|malformed|not valid|corrupt|gzip|file is empty|no header row|"
                    r"extension|unknown format|no sheet|worksheet|max_field_bytes|decompressed size|"
                    r"fewer than .* rows to skip|cannot number rows|unexpected data"),
    )
)
_TASK_KIND_REASONS = {"sql": "transform", "dataform": "dataform", "powerbi": "refresh", "python": "python",
                      "wait_for_files": "gate"}


def error_reason(message: str | None) -> str:
    """A stable label for a file error message (see FILE_REASONS)."""
    if not message:
        return "other"
    for reason, pattern in _FILE_PATTERNS:
        if pattern.search(message):
            return reason
    return "other"


def task_reason(kind: str | None, error: str | None, output: dict[str, Any] | None = None) -> str:
    """A stable label for a failed task run (see TASK_REASONS)."""
    alert = ((output or {}).get("alert") or {}).get("kind")
    if alert == "limit_reached" or (error and "daily refresh limit" in error):
        return "limit"
    if error and "exceeded its timeout" in error:
        return "timeout"
    return _TASK_KIND_REASONS.get(kind or "", "other")
