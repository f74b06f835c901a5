"""Typed settings: YAML per APP_ENV, environment overrides, errors that name the key."""

from __future__ import annotations

import logging

import pytest

from config.settings import load_settings
from errors import ConfigError


def test_app_env_selects_yaml_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "prod")
    with pytest.raises(ConfigError, match=r"CLOUD_SQL_INSTANCE.*WAREHOUSE_URL.*PUBLISHER__PROJECT"):
        load_settings()  # prod never falls back to the embedded local stack
    monkeypatch.setenv("CLOUD_SQL_INSTANCE", "p:r:i")
    monkeypatch.setenv("WAREHOUSE_URL", "bigquery://p")
    monkeypatch.setenv("PUBLISHER__PROJECT", "p")
    assert load_settings().log_format == "json"
    monkeypatch.delenv("WAREHOUSE_URL")
    monkeypatch.setenv("APP_ENV", "local")
    settings = load_settings()
    assert settings.log_format == "text"
    assert settings.warehouse_path is not None and settings.warehouse_path.name == "warehouse.duckdb"


def test_environment_overrides_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("APP_ENV", "local")
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://u:pw@db.example/caf")
    monkeypatch.setenv("WAREHOUSE_URL", "bigquery://my-project")
    monkeypatch.setenv("STORAGE_URL", "gs://")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    monkeypatch.setenv("INGEST__LEASE_SECONDS", "42")
    s = load_settings()
    assert s.database_url == "postgresql+pg8000://u:pw@db.example/caf"
    assert s.warehouse_path is None and s.warehouse_url == "bigquery://my-project"
    assert s.storage_root is None
    assert s.storage_emulator_host == "http://127.0.0.1:9023"
    assert s.ingest.lease_seconds == 42


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("INGEST__LEASE_SECONDS", "soon", "ingest.lease_seconds"),
        ("STORAGE_EMULATOR_HOST", "localhost:9023", "storage_emulator_host"),
        ("WAREHOUSE_URL", "snowflake://x", "warehouse_url"),
        ("DATABASE_URL", "mysql://x", "database_url"),
    ],
)
def test_bad_value_error_names_the_key(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings()


def test_unknown_app_env_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(ConfigError, match="APP_ENV"):
        load_settings()


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DB_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://app:hunter2-secret@db/caf")
    s = load_settings()
    assert s.db_password is not None and s.db_password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.public_view())
    import logs

    logs.configure("json", "DEBUG")
    logging.getLogger("caf.test").warning("connecting to %s", s.database_url)
    record = caplog.records[-1]
    assert "hunter2" not in logs.JsonFormatter().format(record)
    assert "hunter2" not in logs.TextFormatter().format(record)


def test_service_clients_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.services.powerbi import PowerBiClient
    from app.deps import Deps

    with pytest.raises(ConfigError, match="POWERBI__CLIENT_SECRET"):
        _ = Deps(load_settings()).powerbi
    monkeypatch.setenv("POWERBI__TENANT_ID", "tenant-1")
    monkeypatch.setenv("POWERBI__CLIENT_ID", "app-1")
    monkeypatch.setenv("POWERBI__CLIENT_SECRET", "pbi-secret-value")
    monkeypatch.setenv("AUTH__STATIC_TOKENS", '{"tok-secret-value": "acme"}')
    settings = load_settings()
    deps = Deps(settings)
    assert isinstance(deps.powerbi, PowerBiClient) and deps.powerbi is deps.powerbi
    shown = str(settings.public_view())
    assert "pbi-secret-value" not in shown and "tok-secret-value" not in shown and "acme" in shown
