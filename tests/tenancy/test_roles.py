"""Production roles (issue 11, Must 5): tenant-facing reads connect as a login role that can only become caf_app.

`TENANT_DB_USER` names a LOGIN NOINHERIT role whose only membership is caf_app. Tenant sessions
(the pages, /status, the jobs API) connect as it; inside such a transaction there is no way back
to the owner or to caf_system, and leaving caf_app (RESET ROLE) leaves no privileges at all.
Tenant ids in table and task definitions are validated whole (fullmatch).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from database.tenancy import tenant_session
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV, Ingest
from tests.tenancy.conftest import bearer
from tests.tenancy.test_isolation import BETA_CSV, TOKENS, html

LOGIN = f"caf_web_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def login_role(engine):
    """The production tenant login: LOGIN, NOINHERIT, member of caf_app only."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {LOGIN} LOGIN NOINHERIT"))
        conn.execute(text(f"GRANT caf_app TO {LOGIN}"))
    yield LOGIN
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": LOGIN})
        conn.execute(text(f"DROP ROLE {LOGIN}"))


@pytest.fixture
def settings(settings, login_role):
    from config.settings import AuthSettings

    return settings.model_copy(update={"tenant_db_user": login_role, "auth": AuthSettings(
        mode="static", static_tokens=TOKENS, signing_key="test-signing-key-0123456789")})


@pytest.fixture
def loaded(deps, tmp_path: Path) -> Ingest:
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS, "default.yaml")
    ing.register(ORDERS + "    tenant: beta\n", "beta.yaml")
    assert ing.load("sales/orders/d.csv", ORDERS_CSV).status == "SUCCESS"
    assert ing.load("beta/sales/orders/b.csv", BETA_CSV).status == "SUCCESS"
    return ing


def test_tenant_sessions_connect_as_the_login_role_and_see_their_tenant(deps, loaded) -> None:
    with tenant_session(deps.tenant_sessions, "beta") as session:
        assert session.execute(text("SELECT session_user, current_user")).one() == (LOGIN, "caf_app")
        assert session.execute(text("SELECT tenant_id, count(*) FROM files GROUP BY 1")).all() == [("beta", 1)]
    with deps.engine.connect() as conn:
        memberships = conn.execute(text("SELECT roleid::regrole::text FROM pg_auth_members "
                                        "WHERE member = CAST(:r AS regrole)"), {"r": LOGIN}).scalars().all()
        login = conn.execute(text("SELECT rolsuper, rolbypassrls, rolinherit, rolcanlogin FROM pg_roles "
                                  "WHERE rolname = :r"), {"r": LOGIN}).one()
    assert memberships == ["caf_app"] and tuple(login) == (False, False, False, True)


@pytest.mark.parametrize("escape", [
    "SET ROLE caf_system", "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
    "SET LOCAL ROLE caf_system"])
def test_no_way_back_to_the_owner_or_the_system_role(deps, loaded, escape: str) -> None:
    with pytest.raises(exc.ProgrammingError, match="permission denied"), \
            tenant_session(deps.tenant_sessions, "beta") as session:
        session.execute(text(escape))


def test_leaving_caf_app_leaves_no_privileges(deps, loaded) -> None:
    for statement in ("SELECT count(*) FROM files", "SELECT count(*) FROM task_batch",
                      "UPDATE files SET status = 'ERROR'"):
        with pytest.raises(exc.ProgrammingError, match="permission denied"), \
                tenant_session(deps.tenant_sessions, "beta") as session:
            session.execute(text("RESET ROLE"))
            assert session.execute(text("SELECT current_user")).scalar() == LOGIN
            session.execute(text(statement))


def test_the_single_identity_setup_could_escape_which_is_why_production_separates_them(deps, loaded) -> None:
    """Without TENANT_DB_USER tenant sessions drop to caf_app from the owner's connection: SQL run
    there could climb back (RESET ROLE). Documented in docs/tenancy.md; this is the contrast."""
    with tenant_session(deps.sessions, "beta") as session:
        session.execute(text("RESET ROLE"))
        assert session.execute(text("SELECT count(DISTINCT tenant_id) FROM files")).scalar() == 2


def test_pages_status_and_jobs_work_through_the_login_role(deps, loaded, client) -> None:
    page = html(client, "/files", "tok-b")
    assert "beta/sales/orders/b.csv" in page and "sales/orders/d.csv" not in page
    assert client.get("/status", headers=bearer("tok-b")).get_json()["files"] == {"SUCCESS": 1}
    created = client.post("/jobs", json={"files": [{"name": "x.csv", "checksum": "sha256:" + "0" * 64,
                                                     "size": 1, "content_type": "text/csv"}]},
                          headers=bearer("tok-b"))
    assert created.status_code == 201, created.get_json()


@pytest.fixture
def client(deps):
    from tests.conftest import make_client

    return make_client("operator", "http")


@pytest.mark.parametrize("tenant", ["Beta", "1beta", "be-ta", "beta\n", " beta", "b" * 64, ""])
def test_definitions_with_an_invalid_tenant_id_are_refused(tmp_path: Path, tenant: str) -> None:
    import json
    import textwrap

    from engine.definitions import TaskDefinition
    from values.definitions import DefinitionError, parse_definition

    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(ORDERS) + f"tenant: {json.dumps(tenant)}\n")
    with pytest.raises(DefinitionError, match="tenant"):
        parse_definition(path)
    with pytest.raises(ValueError, match="tenant"):
        TaskDefinition.model_validate({"name": "t", "kind": "python", "python": {"callable": "a:b"},
                                       "tenant": tenant})
