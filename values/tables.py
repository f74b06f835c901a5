"""Warehouse tables as values: columns, targets, lineage columns and BigQuery's type vocabulary.

Shared by the registry (database/), the pipeline and the warehouse adapters; names are
validated before they get here (`values.identifiers`).
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = ("STRING", "INT64", "NUMERIC", "BIGNUMERIC", "FLOAT64", "BOOL", "DATE", "DATETIME", "TIME",
         "TIMESTAMP", "JSON", "BYTES")
ALIASES = {"INTEGER": "INT64", "INT": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC",
           "BIGDECIMAL": "BIGNUMERIC"}
MODES = ("NULLABLE", "REQUIRED", "REPEATED")


def normalize_type(value: str) -> str | None:
    """Canonical BigQuery type for a name or alias (case-insensitive), None if unknown."""
    upper = str(value).strip().upper()
    upper = ALIASES.get(upper, upper)
    return upper if upper in TYPES else None


LINEAGE = ("_file_id", "_batch_id", "_source_row", "_ingested_at")
LINEAGE_TYPES = {"_file_id": "INT64", "_batch_id": "INT64", "_source_row": "INT64", "_ingested_at": "TIMESTAMP"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """Canonical BigQuery type (see TYPES / normalize_type)."""
    mode: str = "NULLABLE"
    description: str | None = None


@dataclass(frozen=True)
class TableTarget:
    """A registered table as the warehouse sees it (names already validated)."""

    dataset: str
    table: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()
    partition_field: str | None = None
    write_mode: str = "append"
    """append | replace | merge"""

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)
