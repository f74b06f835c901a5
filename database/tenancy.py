"""Tenant-scoped units of work: the database, not only the code, keeps tenants apart.

`tenant_session` switches the transaction to the non-bypassing application role and sets the
tenant the row-level security policies compare against (migration 0002, docs/tenancy.md).
Both settings are transaction-local, so a pooled connection returns to the pool as it came.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from values.identifiers import tenant_id

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

APP_ROLE = "caf_app"
"""NOLOGIN, NOSUPERUSER, NOBYPASSRLS: subject to the tenant_isolation policies."""
SYSTEM_ROLE = "caf_system"
"""Granted to the owner: the system_access policies let it see every tenant."""
TENANT_SETTING = "app.tenant_id"


def validate_tenant(tenant: Any) -> str:
    """A tenant id (`values.identifiers.tenant_id`); raises `InvalidTenant`, a permanent error."""
    return tenant_id(tenant)


def scope_connection(connection: Any, tenant_id: str) -> None:
    """Make the current transaction of `connection` act as `tenant_id` under the application role."""
    from sqlalchemy import text

    connection.execute(text(f"SET LOCAL ROLE {APP_ROLE}"))
    connection.execute(text("SELECT set_config(:name, :tenant, true)"),
                       {"name": TENANT_SETTING, "tenant": validate_tenant(tenant_id)})


@contextlib.contextmanager
def tenant_session(factory: sessionmaker[Session], tenant_id: str) -> Iterator[Session]:
    """One unit of work as `tenant_id`: role caf_app, `app.tenant_id` set; commit or roll back.

    The role and setting are applied at the start of every transaction of the session (not only
    the first), so code that commits midway never continues with the connection's own, wider
    privileges.
    """
    from sqlalchemy import event

    from database.session import unit_of_work

    tenant = validate_tenant(tenant_id)

    def _scope(session: Session, transaction: Any, connection: Any) -> None:
        scope_connection(connection, tenant)

    with unit_of_work(factory) as session:
        event.listen(session, "after_begin", _scope)
        try:
            yield session
        finally:
            event.remove(session, "after_begin", _scope)


def current_tenant(session: Session) -> str | None:
    """The tenant the session's current transaction is scoped to (None outside tenant_session)."""
    from sqlalchemy import text

    value = session.execute(text("SELECT current_setting(:name, true)"), {"name": TENANT_SETTING}).scalar()
    return value or None


def tenant_dataset(dataset: str, tenant_id: str, *, per_tenant: bool) -> str:
    """The warehouse dataset of a tenant's table: `{tenant}_{dataset}` when datasets are per tenant.

    The default tenant keeps the plain name, so single-tenant installations are unaffected.
    """
    tenant = validate_tenant(tenant_id)
    if not per_tenant or tenant == "default":
        return dataset
    return f"{tenant}_{dataset}"
