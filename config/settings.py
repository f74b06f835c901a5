"""The one typed settings object: `config/<APP_ENV>.yaml`, overridden by environment variables.

Precedence (highest first): explicit arguments, environment variables, the YAML file, defaults.
Top-level keys map to upper-case variables (`DATABASE_URL`, `WAREHOUSE_URL`, `STORAGE_URL`,
`STORAGE_EMULATOR_HOST`, `CLOUD_SQL_INSTANCE`, ...); nested keys use a double underscore
(`INGEST__LEASE_SECONDS=60`). Secrets (`DB_PASSWORD`) come only from the environment or
Secret Manager, are `SecretStr` and never printed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent
APP_ENVS = ("local", "test", "prod")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestSettings(_Section):
    lease_seconds: int = Field(900, gt=0)
    """A PROCESSING claim older than this is taken over by a redelivered event."""
    block_size_bytes: int = Field(2 << 20, ge=1 << 16)
    """Bytes per record batch read from a file; the CSV reader keeps several blocks in flight,
    so peak memory grows with this (2 MiB: ~350 MB peak on any file size; 8 MiB: ~600 MB)."""
    max_decompressed_bytes: int = Field(20 << 30, gt=0)
    """A gzip member inflating beyond this is rejected (zip-bomb guard)."""
    max_field_bytes: int = Field(64 << 20, gt=0)
    """Largest single CSV field accepted."""
    archive_prefix: str = "archive/"
    failed_prefix: str = "failed/"
    quarantine_prefix: str = "quarantine/"
    staging_prefix: str = "staging/"
    move_processed: bool = True
    """Move the raw object to archive/ (SUCCESS) or failed/ (ERROR) when done."""
    stall_seconds: int = Field(3600, gt=0)
    """A file whose claim was given back after a transient failure and that got no redelivery for
    this long (or a PROCESSING claim this long past its lease) is *stalled*: `caf status` and the
    page show it with its last error, its batch is closed, the sweep and `caf backfill` retry it."""
    local_redeliveries: int = Field(5, ge=1)
    """`caf ingest` / `caf backfill`: deliveries of one file before giving up on a transient
    failure (locally the command is the platform that redelivers)."""
    local_backoff_seconds: float = Field(0.5, ge=0)
    """Wait before the first local redelivery; doubled before each next one (0.5, 1, 2, 4 s)."""
    landing_buckets: list[str] | None = None
    """Buckets whose finalize events are ingested; events for any other bucket are acknowledged
    with a log line. Unset: any bucket except `jobs.upload_bucket` (production also relies on the
    Eventarc bucket filter). `jobs.landing_bucket` is always a landing bucket."""


class EventSettings(_Section):
    max_age_seconds: int = Field(3 * 24 * 3600, gt=0)
    """Events older than this are dropped with a log line instead of processed."""


class PublisherSettings(_Section):
    kind: Literal["local", "pubsub"] = "local"
    project: str | None = None
    topic: str = "caf-events"


class TaskSettings(_Section):
    default_max_attempts: int = Field(3, ge=1)
    backoff_base_seconds: float = Field(5.0, gt=0)
    backoff_max_seconds: float = Field(600.0, gt=0)


class AuthSettings(_Section):
    mode: Literal["static", "google"] = "static"
    """static: bearer tokens from `static_tokens` (local/test only); google: Google-signed ID tokens."""
    static_tokens: dict[str, str] = Field(default_factory=dict)
    """token → tenant, for local runs and tests; never used when mode is google."""
    audience: str | None = None
    """Expected `aud` of Google ID tokens (the operator function's URL)."""
    principals: dict[str, str] = Field(default_factory=dict)
    """Verified identity (email or subject) → tenant, for mode google."""
    signing_key: SecretStr | None = None
    """HMAC key for locally signed upload URLs (env AUTH__SIGNING_KEY); generated per process if unset."""
    upload_url_ttl_seconds: int = Field(900, gt=0)
    admins: list[str] = Field(default_factory=list)
    """Identities that see every tenant in `GET /status` (emails, `sub:<subject>`, or for static tokens
    `token:<first 12 hex digits of the token's sha256>`, as jobs record them); everyone else sees their own."""


class JobSettings(_Section):
    upload_bucket: str = "uploads"
    """Bucket the signed upload URLs point at; objects at `<tenant>/<job id>/<name>`."""
    landing_bucket: str = "landing"
    """Where verified files for warehouse tables are copied (non-default tenants under `<tenant>/`)."""
    per_tenant_datasets: bool = True
    """Non-default tenants' tables load into `{tenant}_{dataset}` (database.tenancy.tenant_dataset), so two
    tenants may both register `sales.orders`. With false, a `dataset.table` belongs to the tenant that
    registered it first and the registry refuses it to every other tenant (docs/tenancy.md)."""


class ServeSettings(_Section):
    """`caf serve` only (the local all-in-one server); Cloud Run fronts the deployed functions."""

    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    """Host header names (without port) answered; any other gets 400 (DNS rebinding). The address
    given to `--host` is added when it is a specific one."""
    max_request_bytes: int = Field(32 << 20, gt=0)
    """Largest request body (Cloud Run's own limit is 32 MiB); larger gets 413. Signed uploads are
    limited by their declared size instead."""


class DataformSettings(_Section):
    api_endpoint: str | None = None
    """Override of the Dataform API endpoint (tests point it at a loopback server); unset = Google's."""


class PowerBiSettings(_Section):
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    """Service-principal secret: from the environment (POWERBI__CLIENT_SECRET, mounted from Secret
    Manager by the deploy script), never from YAML; never logged."""
    authority_host: str = "https://login.microsoftonline.com"
    api_base: str = "https://api.powerbi.com/v1.0/myorg"


class AlertSettings(_Section):
    webhooks: list[str] = Field(default_factory=list)
    """Chat webhook URLs (Google Chat or Slack format, chosen by host); put them in the environment
    (ALERTS__WEBHOOKS='["https://..."]') since they embed credentials."""
    min_interval_seconds: int = Field(60, ge=0)
    """Rate limit: at most one alert per group (kind + table / task / DAG) within this interval."""


class FunctionSettings(_Section):
    memory: str = "1Gi"
    timeout_seconds: int = Field(540, gt=0, le=3600)
    max_instances: int = Field(20, ge=1)


class PurgeSchedule(_Section):
    schedule: str | None = None
    """Cloud Scheduler cron of the `purge` message; None (default): retention is not scheduled."""
    older_than: str = Field("90d", pattern=r"^\s*\d+\s*[dhw]?\s*$")
    """What the scheduled purge deletes: older than this (90d, 12w, 36h)."""


class DeploySettings(_Section):
    """Read by run/scripts/deploy (from config/prod.yaml); the functions themselves ignore it."""

    region: str = "europe-west1"
    raw_file: FunctionSettings = FunctionSettings(memory="2Gi", timeout_seconds=540, max_instances=20)
    pubsub: FunctionSettings = FunctionSettings(memory="1Gi", timeout_seconds=540, max_instances=50)
    operator: FunctionSettings = FunctionSettings(memory="1Gi", timeout_seconds=300, max_instances=5)
    sweep_schedule: str = "*/5 * * * *"
    """Cloud Scheduler cron for the lease / outbox sweeps."""
    purge: PurgeSchedule = PurgeSchedule()
    """Scheduled retention (what `caf purge --older-than X --yes` does); off unless `schedule` is set."""


class Settings(BaseSettings):
    """All of CAF's configuration. Built once at start (`get_settings()`), passed to handlers."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="forbid", case_sensitive=False, env_ignore_empty=True
    )

    app_env: Literal["local", "test", "prod"] = "local"
    data_dir: Path = Path(".local")
    """Where the embedded stack keeps its files (relative to the project root)."""
    database_url: str | None = Field(None, repr=False)
    """Any SQLAlchemy Postgres URL; unset = the embedded pgserver under data_dir."""
    cloud_sql_instance: str | None = None
    """PROJECT:REGION:INSTANCE; when set, connect through the Cloud SQL Python Connector."""
    db_user: str = "postgres"
    db_name: str = "caf"
    db_password: SecretStr | None = None
    db_iam_auth: bool = False
    db_pool_size: int = Field(5, ge=1)
    tenant_db_user: str | None = None
    """Login role tenant-scoped sessions connect as (a member of caf_app only, docs/tenancy.md); same
    server, database and authentication as `db_user`. Unset: they drop to caf_app from `db_user`'s connection."""
    tenant_db_password: SecretStr | None = None
    warehouse_url: str = "duckdb:///.local/warehouse.duckdb"
    """duckdb:///path or bigquery://PROJECT[?location=EU]; BigQuery dataset = DuckDB schema."""
    storage_url: str = "file:///.local/buckets"
    """file:///dir (each bucket a sub-folder; relative to the project root) or gs://."""
    storage_emulator_host: str | None = None
    """http://host:port of a GCS emulator; honoured by the GCS adapter."""
    bigquery_emulator_host: str | None = None
    """http://host:port of a BigQuery API emulator (e.g. local-bigquery): the BigQuery adapter then
    talks to it with anonymous credentials, like STORAGE_EMULATOR_HOST for GCS."""
    gcp_project: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    ingest: IngestSettings = IngestSettings()
    events: EventSettings = EventSettings()
    publisher: PublisherSettings = PublisherSettings()
    tasks: TaskSettings = TaskSettings()
    auth: AuthSettings = AuthSettings()
    jobs: JobSettings = JobSettings()
    serve: ServeSettings = ServeSettings()
    dataform: DataformSettings = DataformSettings()
    powerbi: PowerBiSettings = PowerBiSettings()
    deploy: DeploySettings = DeploySettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("storage_emulator_host", "bigquery_emulator_host")
    @classmethod
    def _emulator_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// (e.g. http://127.0.0.1:9023)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("warehouse_url")
    @classmethod
    def _warehouse_scheme(cls, value: str) -> str:
        if not value.startswith(("duckdb://", "bigquery://")):
            raise ValueError("must be duckdb:///path or bigquery://PROJECT")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, value: str) -> str:
        if not value.startswith(("file://", "gs://")):
            raise ValueError("must be file:///dir or gs://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith("postgresql"):
            raise ValueError("must be a SQLAlchemy Postgres URL (postgresql+pg8000://...)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = CONFIG_DIR / f"{_app_env()}.yaml"
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    # -- derived paths -------------------------------------------------------------------
    def resolve_path(self, path: str | Path) -> Path:
        """Relative paths are relative to the project root, so commands work from any cwd."""
        p = Path(path)
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def local_dir(self) -> Path:
        return self.resolve_path(self.data_dir)

    @property
    def warehouse_path(self) -> Path | None:
        if not self.warehouse_url.startswith("duckdb://"):
            return None
        raw = self.warehouse_url.removeprefix("duckdb://")
        return self.resolve_path(raw.removeprefix("/")) if raw.startswith("/.") else self.resolve_path(raw)

    @property
    def storage_root(self) -> Path | None:
        if not self.storage_url.startswith("file://"):
            return None
        raw = self.storage_url.removeprefix("file://")
        return self.resolve_path(raw.removeprefix("/")) if raw.startswith("/.") else self.resolve_path(raw)

    def public_view(self) -> dict[str, Any]:
        """Settings safe to print: secrets masked, URL passwords removed."""
        from logs import redact

        data = self.model_dump(mode="json")
        data["db_password"] = "***" if self.db_password else None
        data["tenant_db_password"] = "***" if self.tenant_db_password else None
        data["powerbi"]["client_secret"] = "***" if self.powerbi.client_secret else None
        data["auth"]["static_tokens"] = {f"***{i}": tenant for i, tenant in enumerate(self.auth.static_tokens.values())}
        data["auth"]["signing_key"] = "***" if self.auth.signing_key else None
        if self.database_url:
            data["database_url"] = redact(self.database_url)
        return data


def _app_env() -> str:
    env = os.environ.get("APP_ENV", "local")
    if env not in APP_ENVS:
        raise ConfigError(f"APP_ENV={env!r} is not one of {', '.join(APP_ENVS)}")
    return env


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; a bad value raises ConfigError naming its key."""
    try:
        settings = Settings(app_env=_app_env(), **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            env_name = "__".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{key} (env {env_name}): {err['msg']}")
        source = f"config/{_app_env()}.yaml"
        raise ConfigError(f"invalid configuration in {source} or environment: " + "; ".join(problems)) from None
    if settings.app_env == "prod":
        missing = missing_cloud_settings(settings)
        if missing:
            raise ConfigError("APP_ENV=prod needs its cloud settings (it never falls back to the embedded local "
                              "stack): " + "; ".join(missing) + "\nfix: set them (run/scripts/deploy does), or "
                              "unset APP_ENV to work locally")
    return settings


def missing_cloud_settings(settings: Settings) -> list[str]:
    """What APP_ENV=prod lacks to reach its cloud services, one phrase per setting."""
    missing = []
    if not (settings.cloud_sql_instance or settings.database_url):
        missing.append("CLOUD_SQL_INSTANCE (or DATABASE_URL) is not set")
    if not settings.warehouse_url.startswith("bigquery://") or settings.warehouse_url.startswith(
            "bigquery://set-by-deploy"):
        missing.append("WAREHOUSE_URL is not bigquery://PROJECT")
    if not settings.storage_url.startswith("gs://"):
        missing.append("STORAGE_URL is not gs://")
    if settings.publisher.kind == "pubsub" and not settings.publisher.project:
        missing.append("PUBLISHER__PROJECT is not set")
    return missing


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()
