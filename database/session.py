"""Engines and units of work. Sessions open at the edge (one unit of work per event)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from errors import TransientError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings

log = logging.getLogger("caf.database")


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL for settings: DATABASE_URL, or the embedded server's `db_name` database."""
    if settings.database_url:
        return settings.database_url
    from database import embedded

    server = embedded.start(settings.local_dir, stop_at_exit=False)
    embedded.ensure_database(server, settings.db_name)
    return embedded.with_database(server, settings.db_name)


def _cloud_sql_creator(settings: Settings, *, tenant: bool = False) -> Any:
    # The connector needs credentials at construction: build it only when configured.
    from google.cloud.sql.connector import Connector

    connector = Connector(refresh_strategy="lazy")
    secret = settings.tenant_db_password if tenant else settings.db_password
    password = secret.get_secret_value() if secret else None
    user = settings.tenant_db_user if tenant else settings.db_user

    def connect() -> Any:
        return connector.connect(
            str(settings.cloud_sql_instance),
            "pg8000",
            user=user,
            password=password,
            db=settings.db_name,
            enable_iam_auth=settings.db_iam_auth,
        )

    return connect


def _no_result_rows(record: logging.LogRecord) -> bool:
    """SQLAlchemy logs every fetched row at DEBUG (`Row (...)`): tenant data, never logged."""
    return record.levelno > logging.DEBUG


def hide_row_data_in_logs() -> None:
    """Drop SQLAlchemy's DEBUG records (result rows) whatever level its logger is set to; idempotent."""
    engine_log = logging.getLogger("sqlalchemy.engine.Engine")
    if _no_result_rows not in engine_log.filters:
        engine_log.addFilter(_no_result_rows)


def create_engine_for(settings: Settings, *, url: str | None = None) -> Engine:
    """One engine per process: Cloud SQL connector when CLOUD_SQL_INSTANCE is set, else a URL.

    Statement parameters are hidden (`hide_parameters`) and result rows never logged: both carry
    tenant row data.
    """
    from sqlalchemy import create_engine

    hide_row_data_in_logs()
    if settings.cloud_sql_instance and not url:
        return _tuned(create_engine("postgresql+pg8000://", creator=_cloud_sql_creator(settings),
                                    **_engine_options(settings)))
    return _tuned(create_engine(url or database_url(settings), **_engine_options(settings)))


def _engine_options(settings: Settings) -> dict[str, Any]:
    # hide_parameters: statement parameters are row data (staged payloads, file names) and never
    # belong in a log line or an exception message. No pool_pre_ping: database.driver pings a
    # connection only when it was idle, not on every checkout.
    return {"pool_pre_ping": False, "pool_size": settings.db_pool_size, "max_overflow": 5, "hide_parameters": True}


def _tuned(engine: Engine) -> Engine:
    from database import driver

    driver.install(engine)
    return engine


def probe(engine: Engine, settings: Settings) -> None:
    """Connect once; unreachable → TransientError naming the setting that points at the database."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError) as exc:
        from logs import redact

        reason = _root_reason(exc)
        if settings.cloud_sql_instance:
            where, fix = f"Cloud SQL instance {settings.cloud_sql_instance}", "check CLOUD_SQL_INSTANCE and DB_USER"
        elif settings.database_url:
            where, fix = f"{redact(settings.database_url)} (DATABASE_URL)", "start that server or correct DATABASE_URL"
        else:
            where, fix = f"the embedded PostgreSQL under {settings.local_dir}", "run `make clean` and try again"
        raise TransientError(f"metadata database unreachable: {where}: {reason}\nfix: {fix}") from None


def _root_reason(exc: BaseException) -> str:
    """The innermost cause in a few words (`Connection refused`), not the driver's paragraph."""
    from logs import redact

    seen = exc
    while seen.__cause__ is not None or getattr(seen, "orig", None) is not None:
        seen = getattr(seen, "orig", None) or seen.__cause__  # type: ignore[assignment]
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror
    text = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
    return redact(text[:160])


def create_tenant_engine(settings: Settings) -> Engine:
    """The engine tenant-scoped sessions use: connected as `tenant_db_user`, a login role that can only
    become caf_app (so a tenant session has no way back to the owner). Requires `tenant_db_user`."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    assert settings.tenant_db_user, "tenant_db_user is not configured"
    hide_row_data_in_logs()  # tenant sessions carry row data too (staged payloads): never in logs
    if settings.cloud_sql_instance:
        return _tuned(create_engine("postgresql+pg8000://", creator=_cloud_sql_creator(settings, tenant=True),
                                    **_engine_options(settings)))
    password = settings.tenant_db_password.get_secret_value() if settings.tenant_db_password else None
    url = make_url(database_url(settings)).set(username=settings.tenant_db_user, password=password)
    return _tuned(create_engine(url, **_engine_options(settings)))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def unit_of_work(factory: sessionmaker[Session], *, durable: bool = True) -> Iterator[Session]:
    """Commit on success, roll back on error; connection failures become TransientError.

    `durable=False`: the commit does not wait for the WAL flush (`synchronous_commit = off`,
    one fsync less — milliseconds on a local disk). Only for a transaction that a later durable
    commit of the same flow always follows before anything is acknowledged: PostgreSQL writes
    its WAL in order, so that flush makes this one durable too, and a crash before it is
    redelivered (e.g. a file's claim and table match, made durable by its final status).
    """
    from sqlalchemy import exc as sa_exc

    session = factory()
    try:
        if not durable:
            from sqlalchemy import text

            from database.direct import NOT_DURABLE

            session.execute(text(NOT_DURABLE))
        yield session
        session.commit()
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        session.rollback()
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise TransientError(f"metadata database unavailable: {cause}") from exc
    except sa_exc.DBAPIError as exc:
        session.rollback()
        if exc.connection_invalidated:
            raise TransientError("metadata database connection lost") from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
