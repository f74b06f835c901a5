"""Table definitions as files: one YAML/JSON per table, validated into a typed model.

Errors name the file and the field (`sales/orders.yaml: schema.1.type: unknown type 'INTEGR'`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from errors import PermanentError
from values.identifiers import as_value_error, column_name, dataset_name, table_name, tenant_id
from values.tables import MODES, Column, TableTarget, normalize_type

FORMATS = ("csv", "tsv", "ndjson", "json", "parquet", "xlsx")
DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")


class DefinitionError(PermanentError):
    """A table definition file is invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CsvOptions(_Strict):
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    encoding: str = "utf-8"
    null_markers: list[str] = Field(default_factory=lambda: [""])
    skip_rows: int = Field(0, ge=0)

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class ColumnDef(_Strict):
    name: str
    type: str
    mode: str = "NULLABLE"
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return as_value_error(column_name, value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        canonical = normalize_type(value)
        if canonical is None:
            raise ValueError(f"unknown type {value!r} (use a BigQuery type such as STRING, INT64, NUMERIC)")
        return canonical

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        upper = value.upper()
        if upper not in MODES:
            raise ValueError(f"unknown mode {value!r} (NULLABLE, REQUIRED or REPEATED)")
        return upper


class TableDefinition(_Strict):
    dataset: str
    table: str
    source: str | None = None
    format: Literal["csv", "tsv", "ndjson", "json", "parquet", "xlsx"]
    csv: CsvOptions | None = None
    sheet: str | None = None
    schema_: list[ColumnDef] = Field(alias="schema", min_length=1)
    columns: dict[str, str] = Field(default_factory=dict)
    keys: list[str] = Field(default_factory=list)
    write_mode: Literal["append", "replace", "merge"] = "append"
    partition_field: str | None = None
    max_bad_records: int = Field(0, ge=0)
    allow_new_columns: bool = False
    tenant: str = "default"
    description: str | None = None
    target: Literal["warehouse", "staging"] = "warehouse"
    """staging: rows land as JSONB in Postgres `staging` (csv/tsv/ndjson), not in the warehouse."""

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return as_value_error(tenant_id, value)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return as_value_error(dataset_name, value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return as_value_error(table_name, value)

    @model_validator(mode="after")
    def _consistent(self) -> TableDefinition:
        names = [c.name for c in self.schema_]
        lowered = [n.lower() for n in names]
        dupes = sorted({n for n in lowered if lowered.count(n) > 1})
        if dupes:
            raise ValueError(f"schema: duplicate column name(s): {', '.join(dupes)}")
        for key in self.keys:
            if key not in names:
                raise ValueError(f"keys: {key!r} is not a column of the schema")
        if self.write_mode == "merge" and not self.keys:
            raise ValueError("write_mode merge needs keys")
        if self.partition_field and self.partition_field not in names:
            raise ValueError(f"partition_field: {self.partition_field!r} is not a column of the schema")
        for source_name, target in self.columns.items():
            if target not in names:
                raise ValueError(f"columns: {source_name!r} maps to {target!r}, which is not in the schema")
        repeated = [c.name for c in self.schema_ if c.mode == "REPEATED"]
        if repeated and self.format not in ("ndjson", "json", "parquet"):
            raise ValueError(f"schema: REPEATED column(s) {', '.join(repeated)} need format ndjson, json or parquet")
        if self.sheet and self.format != "xlsx":
            raise ValueError("sheet: only applies to format xlsx")
        if self.csv and self.format not in ("csv", "tsv"):
            raise ValueError("csv: only applies to format csv or tsv")
        if self.target == "staging" and self.format not in ("csv", "tsv", "ndjson"):
            raise ValueError("target staging: format must be csv, tsv or ndjson")
        return self

    # -- derived ----------------------------------------------------------------------------
    @property
    def source_glob(self) -> str:
        return self.source or f"{self.dataset}/{self.table}/*"

    def reader_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.format in ("csv", "tsv"):
            csv = self.csv or CsvOptions(delimiter="\t" if self.format == "tsv" else ",")
            opts["csv"] = csv.model_dump()
        if self.sheet:
            opts["sheet"] = self.sheet
        return opts

    def checksum(self) -> str:
        canonical = json.dumps(self.model_dump(by_alias=True, exclude_defaults=True), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def table_target(self) -> TableTarget:
        return TableTarget(
            dataset=self.dataset, table=self.table,
            columns=tuple(Column(c.name, c.type, c.mode, c.description) for c in self.schema_),
            keys=tuple(self.keys), partition_field=self.partition_field, write_mode=self.write_mode,
        )


def parse_definition(path: Path) -> TableDefinition:
    """Read and validate one definition file."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise DefinitionError(f"{path}: cannot be read as {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: expected a mapping of keys (dataset, table, format, schema, ...)")
    try:
        return TableDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(definition)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
        raise DefinitionError(f"{path}: " + "; ".join(problems)) from None


def definition_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DefinitionError(f"{directory} is not a directory")
    return sorted(p for p in directory.rglob("*") if p.suffix in DEFINITION_SUFFIXES and p.is_file())
