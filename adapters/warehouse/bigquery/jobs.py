"""BigQuery jobs: deterministic job ids, labels, query parameters, and vendor errors made CAF errors.

Vendor errors are translated here, once, in `translate`, using the reason table `_REASONS`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from errors import CafError, PermanentError, TransientError, is_transient_http_status
from values.identifiers import InvalidIdentifier

# Job error reason -> the CAF error it becomes. Unknown reasons fall back to the HTTP status.
# quotaExceeded is permanent: the per-table daily quotas do not reset before the redeliveries run out.
_REASONS: dict[str, type[CafError]] = {
    "backendError": TransientError,
    "rateLimitExceeded": TransientError,
    "internalError": TransientError,
    "jobInternalError": TransientError,
    "jobRateLimitExceeded": TransientError,
    "invalid": PermanentError,
    "invalidQuery": PermanentError,
    "notFound": PermanentError,
    "duplicate": PermanentError,
    "accessDenied": PermanentError,
    "billingNotEnabled": PermanentError,
    "quotaExceeded": PermanentError,
}
# BigQuery reports losing a race between transactions on the same table as `invalidQuery`;
# running it again later succeeds, so these messages override the reason.
_TRANSIENT_MESSAGES = ("due to concurrent update", "could not serialize access")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,1000}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_JOB_ATTEMPTS = 5


def parquet_load_config(schema: list[Any], labels: dict[str, str], *, write: str, create: str) -> Any:
    """A Parquet load job's configuration (list inference on, so REPEATED columns load as arrays).

    Args:
        schema: the destination's `SchemaField`s.
        labels: job labels, already sanitised.
        write: a `WriteDisposition` (WRITE_TRUNCATE for the scratch table, WRITE_APPEND for a direct append).
        create: a `CreateDisposition`.
    """
    from google.cloud import bigquery
    from google.cloud.bigquery.format_options import ParquetOptions

    parquet = ParquetOptions()
    parquet.enable_list_inference = True
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=schema, labels=labels,
                                    write_disposition=write, create_disposition=create)
    config.parquet_options = parquet
    return config


def valid_job_id(raw: str) -> str:
    """A valid job id, deterministic for `raw`; invalid characters are replaced and a hash of
    the original appended so that two different requests never share an id."""
    if _JOB_ID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', raw)[:900]}_{digest}"


def sanitize_labels(labels: dict[str, str]) -> dict[str, str]:
    """BigQuery label rules: lowercase [a-z0-9_-], at most 63 characters, keys start with a
    letter, at most 64 labels."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        k = re.sub(r"[^a-z0-9_-]", "_", str(key).lower())
        if not k[:1].isalpha():
            k = f"l_{k}"
        out[k[:63]] = re.sub(r"[^a-z0-9_-]", "_", str(value).lower())[:63]
    return dict(list(out.items())[:64])


def query_parameter(name: str, value: Any) -> Any:
    """A named BigQuery query parameter with its type inferred from the Python value."""
    from google.cloud import bigquery

    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        raise InvalidIdentifier(f"query parameter name {name!r} is invalid")
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        types = {_scalar_type(v) for v in items if v is not None}
        if types == {"INT64", "FLOAT64"}:
            types = {"FLOAT64"}
        if len(types) > 1:
            raise TypeError(f"query parameter {name} mixes element types {sorted(types)}")
        return bigquery.ArrayQueryParameter(name, types.pop() if types else "STRING", items)
    return bigquery.ScalarQueryParameter(name, "STRING" if value is None else _scalar_type(value), value)


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, dt.datetime):  # before date: datetime is a date
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")


@contextmanager
def vendor_errors(action: str) -> Iterator[None]:
    """Translate google-cloud / transport exceptions raised inside into CAF errors."""
    try:
        yield
    except CafError:
        raise
    except Exception as exc:
        error = translate(exc, action)
        if error is None:
            raise
        raise error from exc


def translate(exc: Exception, action: str) -> CafError | None:
    import concurrent.futures

    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.GoogleAPICallError):
        reason = None
        if exc.errors and isinstance(exc.errors[0], dict):
            reason = exc.errors[0].get("reason")
        return error_from_reason(reason, exc.message or str(exc), action, status=exc.code)
    if isinstance(exc, gexc.RetryError | concurrent.futures.TimeoutError):
        return TransientError(f"BigQuery {action} did not finish in time: {exc}")
    if isinstance(exc, ConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout
                  | auth_exc.TransportError):
        return TransientError(f"BigQuery {action}: connection failed ({type(exc).__name__})")
    if isinstance(exc, auth_exc.RefreshError):
        cls = TransientError if getattr(exc, "retryable", False) else PermanentError
        return cls(f"BigQuery {action}: could not obtain an access token")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return PermanentError(f"BigQuery {action}: authentication failed ({type(exc).__name__})")
    return None


def error_from_reason(reason: str | None, message: str, action: str, *,
                       status: int | None = None) -> CafError:
    """Apply `_REASONS` (and the concurrent-update override); unknown reasons go by HTTP status."""
    text = f"BigQuery {action} failed ({reason or status}): {message}"
    if any(m in message.lower() for m in _TRANSIENT_MESSAGES):
        return TransientError(text)
    kind = _REASONS.get(reason or "")
    if kind is None:
        kind = TransientError if status is None or is_transient_http_status(int(status)) else PermanentError
    return kind(text)
