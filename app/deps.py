"""The composition root: clients built from settings once per process, lazily (cold starts stay cheap).

handlers/ and cli/ hold a `Deps`; they hand it to engine/ and pipeline/, which see it only
through their ports (`engine.ports.TaskPorts`, `pipeline.ports.IngestPorts`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from adapters.publisher.base import Publisher
    from adapters.storage.base import ObjectStorage
    from adapters.warehouse.base import Warehouse
    from config.settings import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


class Deps:
    """Everything a handler needs; each part is built on first use and then reused."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utcnow, **parts: Any) -> None:
        self.settings = settings
        self.clock = clock
        self._parts = parts
        self._lock = threading.RLock()

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._parts:
            with self._lock:
                if name not in self._parts:
                    self._parts[name] = build()
        return self._parts[name]

    @property
    def engine(self) -> Engine:
        from database.session import create_engine_for

        return self._get("engine", lambda: create_engine_for(self.settings))

    @property
    def sessions(self) -> sessionmaker[Session]:
        from database.session import session_factory

        return self._get("sessions", lambda: session_factory(self.engine))

    @property
    def tenant_sessions(self) -> sessionmaker[Session]:
        """Sessions for `tenant_session`: as `tenant_db_user` (production: a login role that can only
        become caf_app) when configured, else the system connection's (which drops to caf_app)."""
        if not self.settings.tenant_db_user:
            return self.sessions
        from database.session import create_tenant_engine, session_factory

        engine = self._get("tenant_engine", lambda: create_tenant_engine(self.settings))
        return self._get("tenant_sessions", lambda: session_factory(engine))

    @property
    def storage(self) -> ObjectStorage:
        from adapters.storage import build_storage

        return self._get("storage", lambda: build_storage(self.settings))

    @property
    def warehouse(self) -> Warehouse:
        from adapters.warehouse import build_warehouse

        return self._get("warehouse", lambda: build_warehouse(self.settings))

    @property
    def publisher(self) -> Publisher:
        from adapters.publisher import build_publisher

        return self._get("publisher", lambda: build_publisher(self.settings))

    @property
    def dataform(self) -> Any:
        from adapters.services.dataform import DataformClient

        return self._get("dataform", lambda: DataformClient(api_endpoint=self.settings.dataform.api_endpoint))

    @property
    def powerbi(self) -> Any:
        if "powerbi" in self._parts:
            return self._parts["powerbi"]
        cfg = self.settings.powerbi
        if not (cfg.tenant_id and cfg.client_id and cfg.client_secret):
            from errors import ConfigError

            raise ConfigError("Power BI is not configured: set POWERBI__TENANT_ID, POWERBI__CLIENT_ID and "
                              "POWERBI__CLIENT_SECRET (from Secret Manager)")
        secret = cfg.client_secret

        def build() -> Any:
            from adapters.services.powerbi import PowerBiClient

            return PowerBiClient(tenant_id=cfg.tenant_id or "", client_id=cfg.client_id or "",
                                 client_secret=secret.get_secret_value(), authority_host=cfg.authority_host,
                                 api_base=cfg.api_base)

        return self._get("powerbi", build)

    def alert(self, kind: str, ident: int) -> bool:
        """Raise alert `kind` (`file_error`, `task_error`, `batch_done`, `file_stalled`) for its row id;
        never raises."""
        from app import alerts

        hooks = {"file_error": alerts.on_file_error, "task_error": alerts.on_task_error,
                 "batch_done": alerts.on_batch_done, "file_stalled": alerts.on_file_stalled}
        return hooks[kind](self, ident)

    def close(self) -> None:
        for part in self._parts.values():
            closer = getattr(part, "close", None) or getattr(part, "dispose", None)
            if callable(closer):
                closer()
        self._parts.clear()


_current: Deps | None = None
_current_lock = threading.Lock()


def get_deps() -> Deps:
    """The process-wide Deps, built from settings on first use."""
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                from config.settings import get_settings

                _current = Deps(get_settings())
    return _current


def set_deps(deps: Deps | None) -> Deps | None:
    """Install Deps (CLI, `caf serve`, tests); returns the previous one."""
    global _current
    previous, _current = _current, deps
    return previous
