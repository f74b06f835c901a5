"""Identifier validation: names that come from files, events or definitions never reach SQL raw."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from errors import PermanentError

# BigQuery column names: letters, digits, underscores; must not start with a digit; <= 300.
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
# BigQuery dataset ids: letters, digits, underscores, <= 1024. Table ids: same subset here.
_DATASET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$|^[a-z0-9.:-]{1,128}$")
_TENANT = re.compile(r"[a-z][a-z0-9_]{0,62}")  # fullmatch: `$` would accept a trailing newline
_RESERVED_PREFIXES = ("_partition", "_table_", "_file_", "_row_timestamp", "__root__", "_colidentifier")


class InvalidIdentifier(PermanentError):
    """A dataset, table or column name that is not allowed."""


class InvalidTenant(InvalidIdentifier):
    """A tenant id that is not a short lower-case identifier."""


def tenant_id(name: Any) -> str:
    """A tenant id: 1-63 characters of a-z, 0-9 and `_`, starting with a letter (it prefixes dataset names)."""
    if not isinstance(name, str) or not _TENANT.fullmatch(name):
        raise InvalidTenant(f"tenant id {str(name)[:80]!r} is invalid: use 1-63 characters a-z, 0-9 or _, "
                            "starting with a letter")
    return name


def as_value_error(check: Callable[[str], str], value: str) -> str:
    """Run an identifier check, reporting failures the way pydantic validators must (ValueError)."""
    try:
        return check(value)
    except InvalidIdentifier as exc:
        raise ValueError(str(exc)) from None


def column_name(name: str, *, allow_lineage: bool = False) -> str:
    if not isinstance(name, str) or not _COLUMN.fullmatch(name):
        raise InvalidIdentifier(
            f"column name {name!r} is invalid: use letters, digits and underscores, "
            "not starting with a digit, at most 300 characters"
        )
    lowered = name.lower()
    if not allow_lineage and (lowered.startswith("_") and lowered in LINEAGE_COLUMNS):
        raise InvalidIdentifier(f"column name {name!r} is reserved for CAF lineage")
    if lowered.startswith(_RESERVED_PREFIXES) and lowered not in LINEAGE_COLUMNS:
        raise InvalidIdentifier(f"column name {name!r} uses a prefix reserved by BigQuery")
    return name


def dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _DATASET.fullmatch(name):
        raise InvalidIdentifier(
            f"dataset name {name!r} is invalid: use letters, digits and underscores (max 1024)"
        )
    return name


def table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE.fullmatch(name):
        raise InvalidIdentifier(f"table name {name!r} is invalid: use letters, digits and underscores")
    return name


def project_name(name: str) -> str:
    if not isinstance(name, str) or not _PROJECT.fullmatch(name):
        raise InvalidIdentifier(f"project id {name!r} is invalid")
    return name


def quote_ident(name: str) -> str:
    """Double-quote an identifier already validated by one of the functions above (DuckDB, Postgres)."""
    if not _DATASET.fullmatch(name):
        raise InvalidIdentifier(f"identifier {name!r} is invalid")
    return f'"{name}"'


def quote_pg_ident(name: str) -> str:
    return quote_ident(name)


def bq_ident(name: str) -> str:
    """Backtick-quote a validated BigQuery identifier part."""
    if not (_DATASET.fullmatch(name) or _PROJECT.fullmatch(name)):
        raise InvalidIdentifier(f"identifier {name!r} is invalid")
    return f"`{name}`"


LINEAGE_COLUMNS = ("_file_id", "_batch_id", "_source_row", "_ingested_at")
