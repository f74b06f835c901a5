"""Task definitions as files: YAML → validated `TaskDefinition`s, with the DAG checked whole.

One YAML per task, or one file per DAG (`dag: name` and `tasks: [...]`). Every problem is
reported with its file and key; an unknown dependency is named; a cycle is printed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from errors import ConfigError
from values.identifiers import as_value_error, tenant_id

KINDS = ("sql", "dataform", "powerbi", "python", "wait_for_files")
PARAM_TYPES = ("STRING", "INT64", "FLOAT64", "NUMERIC", "BOOL", "DATE", "TIMESTAMP")
RESERVED_PARAMETERS = ("batch_id", "run_date")
_NAME = r"^[A-Za-z][A-Za-z0-9_.\-]{0,299}$"
_TABLE = r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*"  # fullmatch: `$` accepts a trailing newline
_CALLABLE = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
# Targets of the statements a SQL task may write with, for lineage when `produces` is not given.
_SQL_TARGET = re.compile(
    r"\b(?:create\s+(?:or\s+replace\s+)?table(?:\s+if\s+not\s+exists)?|insert(?:\s+into)?|merge(?:\s+into)?"
    r"|delete\s+from|truncate\s+table)\s+[`\"]?([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*){1,2})[`\"]?",
    re.IGNORECASE)


class DefinitionError(ConfigError):
    """Task definitions are invalid; the message lists every problem with its file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlParameter(_Strict):
    type: Literal["STRING", "INT64", "FLOAT64", "NUMERIC", "BOOL", "DATE", "TIMESTAMP"]
    default: Any = None


class SqlPayload(_Strict):
    query: str = Field(min_length=1)
    parameters: dict[str, SqlParameter] = {}

    @field_validator("parameters", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        # `name: TYPE` is short for `name: {type: TYPE}`.
        if isinstance(value, dict):
            return {k: {"type": str(v).upper()} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, SqlParameter]) -> dict[str, SqlParameter]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"parameter name {name!r} is invalid")
            if name in RESERVED_PARAMETERS:
                raise ValueError(f"parameter {name!r} is provided by the engine; do not declare it")
        return value


class DataformRepo(_Strict):
    name: str | None = None
    project: str
    location: str
    repository: str
    git_commitish: str | None = None
    workspace: str | None = None
    release_config: str | None = None
    included_tags: list[str] = []
    included_targets: list[str] = []
    transitive_dependencies: bool = False
    transitive_dependents: bool = False
    full_refresh: bool = False
    compilation_vars: dict[str, str] = {}
    service_account: str | None = None

    @model_validator(mode="after")
    def _source(self) -> DataformRepo:
        if not (self.git_commitish or self.workspace or self.release_config):
            raise ValueError("set one of git_commitish, workspace or release_config")
        return self


class DataformPayload(_Strict):
    repo: DataformRepo
    poll_seconds: int = Field(30, ge=1)


class PowerBiReportDef(_Strict):
    name: str | None = None
    group_id: str
    dataset_id: str
    report_id: str | None = None
    refresh_body: dict[str, Any] | None = None
    daily_limit: int = Field(8, ge=1)


class PowerBiPayload(_Strict):
    report: PowerBiReportDef
    poll_seconds: int = Field(60, ge=1)


class PythonPayload(_Strict):
    callable: str = Field(pattern=_CALLABLE)


class WaitForFilesPayload(_Strict):
    tables: list[str] = Field(min_length=1)

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        return [_table_ref(t) for t in value]


class TaskDefinition(_Strict):
    name: str = Field(pattern=_NAME)
    kind: Literal["sql", "dataform", "powerbi", "python", "wait_for_files"]
    dag: str | None = Field(None, pattern=_NAME)
    description: str | None = None
    depends_on: list[str] = []
    on_file: list[str] = []
    produces: list[str] = []
    schedule: str | None = None
    max_attempts: int = Field(3, ge=1, le=100)
    timeout: int = Field(3600, ge=1)
    """Seconds; `"10m"`, `"2h"`, `"30s"` accepted."""
    sql: SqlPayload | None = None
    dataform: DataformPayload | None = None
    powerbi: PowerBiPayload | None = None
    python: PythonPayload | None = None
    wait_for_files: WaitForFilesPayload | None = None
    tenant: str = "default"
    """The tenant the task belongs to: it listens to that tenant's files and runs in its batches."""

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return as_value_error(tenant_id, value)

    @field_validator("on_file", "produces")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        return [_table_ref(t) for t in value]

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError(f"{value!r} is not a duration (seconds, or like '90s', '10m', '2h')")
            return int(match.group(1)) * _UNITS[match.group(2)]
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        # Cloud Scheduler takes unix-cron: five fields.
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '0 6 * * *')")
        return value

    @model_validator(mode="after")
    def _payload(self) -> TaskDefinition:
        for kind in KINDS:
            present = getattr(self, kind) is not None
            if kind == self.kind and not present:
                raise ValueError(f"kind {kind} needs a '{kind}' payload")
            if kind != self.kind and present:
                raise ValueError(f"'{kind}' payload given but kind is {self.kind}")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on lists a task twice")
        return self

    @property
    def payload(self) -> dict[str, Any]:
        model = getattr(self, self.kind)
        return model.model_dump(mode="json") if model is not None else {}

    @property
    def outputs(self) -> list[str]:
        """Tables this task writes: `produces`, else the targets found in its SQL."""
        if self.produces or self.sql is None:
            return list(self.produces)
        found = [".".join(m.group(1).split(".")[-2:]) for m in _SQL_TARGET.finditer(self.sql.query)]
        return sorted(set(found))

    @property
    def checksum(self) -> str:
        # The default tenant is left out, so definitions synced before tasks had a tenant stay unchanged.
        dumped = self.model_dump(mode="json", exclude={"tenant"} if self.tenant == "default" else None)
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _table_ref(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(_TABLE, value):
        raise ValueError(f"{value!r} is not 'dataset.table'")
    return value


def load_dir(directory: Path) -> list[tuple[Path, TaskDefinition]]:
    """Every `*.yaml` / `*.yml` under `directory` (recursively), validated as one DAG set."""
    if not directory.is_dir():
        raise DefinitionError(f"{directory}: not a directory")
    problems: list[str] = []
    loaded: list[tuple[Path, TaskDefinition]] = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
        loaded.extend(_load_file(path, problems))
    seen: dict[str, Path] = {}
    for path, definition in loaded:
        if definition.name in seen:
            problems.append(f"{path}: task '{definition.name}' is also defined in {seen[definition.name]}")
        seen.setdefault(definition.name, path)
    if problems:
        raise DefinitionError("invalid task definitions:\n  " + "\n  ".join(problems))
    check_graph(loaded)
    return loaded


def _load_file(path: Path, problems: list[str]) -> list[tuple[Path, TaskDefinition]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid YAML: {exc}")
        return []
    if not isinstance(document, dict):
        problems.append(f"{path}: expected a task mapping or a mapping with 'tasks: [...]'")
        return []
    if "tasks" not in document:
        return _validated(path, "", document, problems)
    extra = set(document) - {"tasks", "dag", "description"}
    if extra:
        problems.append(f"{path}: unknown top-level key(s) {', '.join(sorted(extra))} (expected dag, tasks)")
    items = document["tasks"]
    if not isinstance(items, list) or not items:
        problems.append(f"{path}: 'tasks' must be a non-empty list")
        return []
    result = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and document.get("dag") is not None:
            item = {"dag": document["dag"], **item}
        result.extend(_validated(path, f"tasks[{index}]", item, problems))
    return result


def _validated(path: Path, where: str, item: Any, problems: list[str]) -> list[tuple[Path, TaskDefinition]]:
    named = f"task '{item['name']}'" if isinstance(item, dict) and "name" in item else ""
    label = f"{where} ({named})" if where and named else where or named
    try:
        return [(path, TaskDefinition.model_validate(item))]
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            at = ": ".join(part for part in (label.strip(), key) if part)
            problems.append(f"{path}: {at}: {message}" if at else f"{path}: {message}")
        return []


def check_graph(definitions: list[tuple[Path, TaskDefinition]]) -> None:
    """Reject unknown dependencies (named) and cycles (printed as a → b → a)."""
    by_name = {d.name: (p, d) for p, d in definitions}
    problems = [f"{path}: task '{d.name}': depends_on names unknown task '{parent}'"
                for path, d in definitions for parent in d.depends_on if parent not in by_name]
    problems += [f"{path}: task '{d.name}' (tenant {d.tenant}): depends_on names task '{parent}' of tenant "
                 f"{by_name[parent][1].tenant}; a DAG belongs to one tenant"
                 for path, d in definitions for parent in d.depends_on
                 if parent in by_name and by_name[parent][1].tenant != d.tenant]
    if problems:
        raise DefinitionError("invalid task definitions:\n  " + "\n  ".join(problems))
    cycle = find_cycle({d.name: list(d.depends_on) for _, d in definitions})
    if cycle:
        files = sorted({str(by_name[name][0]) for name in cycle})
        raise DefinitionError(f"dependency cycle: {' → '.join(cycle)} (in {', '.join(files)})")


def find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the graph child → parents as [a, b, ..., a] in dependency order, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(parents):
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            edges = parents.get(node, [])
            if index < len(edges):
                stack.append((node, index + 1))
                nxt = edges[index]
                if state.get(nxt) == 1:
                    loop = [*path[path.index(nxt):], nxt]
                    return list(reversed(loop))  # parent → child reading order
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None
