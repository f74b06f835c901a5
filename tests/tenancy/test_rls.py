"""Row-level security proven with raw SQL as the application role, and through tenant_session."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import exc, select, text

from database import jobs
from database.job_models import Job, JobFile
from database.tenancy import current_tenant, tenant_dataset, tenant_session
from values.identifiers import InvalidTenant

TENANT_TABLES = ("files", "task_batch", "domain", "tables", "tasks", "query", "repo", "power_bi_report", "outbox",
                 "job", "job_file", "artifacts", "staging_entity", "staging", "task_log", "task_dependencies",
                 "schemas")
RLS_TABLES = (*TENANT_TABLES, "task_try")  # with row-level security, seeded or not
ROWS = {"tasks": 2}  # seeded rows per tenant, where not 1


def seed(conn, tenant: str, n: int) -> dict[str, object]:
    """One row per tenant-owned table for `tenant`, written as the system (owner) connection."""
    ids: dict[str, object] = {}

    def one(sql: str, **params) -> object:
        result = conn.execute(text(sql), {"t": tenant, **params})
        return result.scalar() if result.returns_rows else None

    ids["domain"] = one("INSERT INTO domain (name, tenant_id) VALUES (:t, :t) RETURNING id")
    table = one("INSERT INTO tables (domain_id, name, source_glob, format, tenant_id) "
                "VALUES (:d, 'x', 'x/*', 'csv', :t) RETURNING id", d=ids["domain"])
    one("INSERT INTO schemas (table_id, ordinal, name, type, tenant_id) VALUES (:tb, 1, 'c', 'STRING', :t)", tb=table)
    one("INSERT INTO files (bucket, name, generation, tenant_id) VALUES ('landing', :t, :n, :t)", n=n)
    batch = one("INSERT INTO task_batch (trigger, tenant_id) VALUES ('cli', :t) RETURNING id")
    parent = one("INSERT INTO tasks (name, kind, tenant_id, enabled) VALUES (:t || '_parent', 'sql', :t, false) "
                 "RETURNING id")
    task = one("INSERT INTO tasks (name, kind, tenant_id) VALUES (:t, 'sql', :t) RETURNING id")
    one("INSERT INTO task_dependencies (parent_id, child_id, tenant_id) VALUES (:p, :c, :t)", p=parent, c=task)
    one("INSERT INTO task_log (task_id, batch_id, tenant_id) VALUES (:k, :b, :t)", k=task, b=batch)
    ids.update(batch=batch, task=task, table=table)
    one("INSERT INTO query (name, sql_text, tenant_id) VALUES (:t, 'select 1', :t)")
    one("INSERT INTO repo (name, project, location, repository, tenant_id) VALUES (:t, 'p', 'eu', 'r', :t)")
    one("INSERT INTO power_bi_report (name, group_id, dataset_id, tenant_id) VALUES (:t, 'g', 'd', :t)")
    one("INSERT INTO outbox (event_type, payload, tenant_id) VALUES ('file_loaded', '{}', :t)")
    ids["job"] = one("INSERT INTO job (tenant_id, checksum, fileset_key, requested_by) "
                     "VALUES (:t, 'c', :t, 'seed') RETURNING id")
    ids["job_file"] = one("INSERT INTO job_file (job_id, tenant_id, name, checksum, size, content_type, bucket, "
                          "storage_path) VALUES (:j, :t, 'a.csv', 'md5:x', 1, 'text/csv', 'uploads', :t || '/a.csv') "
                          "RETURNING id", j=ids["job"])
    one("INSERT INTO artifacts (job_id, tenant_id, type, storage_path) VALUES (:j, :t, 'summary', 's')", j=ids["job"])
    ids["entity"] = one("INSERT INTO staging_entity (tenant_id, name, source_glob, format) "
                        "VALUES (:t, 'e', '*', 'csv') RETURNING id")
    one("INSERT INTO staging (job_id, job_file_id, entity_id, tenant_id, source_row_num, source_row_id, "
        "row_checksum, payload, provenance) VALUES (:j, :f, :e, :t, 1, 'a.csv#1', 'h', '{}', '{}')",
        j=ids["job"], f=ids["job_file"], e=ids["entity"])
    return ids


@pytest.fixture
def two_tenants(deps) -> dict[str, dict[str, object]]:
    with deps.engine.begin() as conn:
        return {"tenant_a": seed(conn, "tenant_a", 1), "tenant_b": seed(conn, "tenant_b", 2)}


def as_app(conn, tenant: str | None) -> None:
    conn.execute(text("SET LOCAL ROLE caf_app"))
    if tenant is not None:
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})


def visible(conn, table: str) -> dict[str, int]:
    return dict(conn.execute(text(f"SELECT tenant_id, count(*) FROM {table} GROUP BY 1")).all())


def test_raw_select_as_app_role_returns_nothing_of_the_other_tenant(deps, two_tenants) -> None:
    with deps.engine.connect() as conn, conn.begin():
        as_app(conn, "tenant_a")
        assert conn.execute(text("SELECT current_user")).scalar() == "caf_app"
        for table in TENANT_TABLES:
            assert visible(conn, table) == {"tenant_a": ROWS.get(table, 1)}, table
            assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE tenant_id = 'tenant_b'")).scalar() == 0
        job_b = two_tenants["tenant_b"]["job"]
        assert conn.execute(text("SELECT count(*) FROM job WHERE id = :j"), {"j": job_b}).scalar() == 0
    with deps.engine.connect() as conn, conn.begin():  # the system connection is unaffected: both tenants
        for table in TENANT_TABLES:
            assert visible(conn, table) == {"tenant_a": ROWS.get(table, 1), "tenant_b": ROWS.get(table, 1)}, table


def test_app_role_without_tenant_setting_sees_nothing(deps, two_tenants) -> None:
    with deps.engine.connect() as conn, conn.begin():
        as_app(conn, None)
        for table in TENANT_TABLES:
            assert visible(conn, table) == {}, table
    with deps.engine.connect() as conn, conn.begin():
        as_app(conn, "")
        assert visible(conn, "job") == {}


@pytest.mark.parametrize("statement", [
    "INSERT INTO job (tenant_id, checksum, fileset_key, requested_by) VALUES ('tenant_b', 'c', 'k', 'x')",
    "INSERT INTO job_file (job_id, tenant_id, name, checksum, size, content_type, bucket, storage_path) "
    "VALUES (:job_b, 'tenant_b', 'evil.csv', 'md5:x', 1, 'text/csv', 'uploads', 'tenant_b/evil.csv')",
    "UPDATE job SET tenant_id = 'tenant_b' WHERE tenant_id = 'tenant_a'",
])
def test_writing_another_tenants_row_as_the_app_role_is_refused(deps, two_tenants, statement: str) -> None:
    with pytest.raises(exc.ProgrammingError, match="row-level security"), deps.engine.connect() as conn, \
            conn.begin():
        as_app(conn, "tenant_a")
        conn.execute(text(statement), {"job_b": two_tenants["tenant_b"]["job"]} if ":job_b" in statement else {})


def test_updates_and_deletes_of_another_tenants_rows_touch_nothing(deps, two_tenants) -> None:
    with deps.engine.connect() as conn, conn.begin():
        as_app(conn, "tenant_a")
        assert conn.execute(text("UPDATE job SET status = 'canceled' WHERE tenant_id = 'tenant_b'")).rowcount == 0
        assert conn.execute(text("DELETE FROM staging WHERE tenant_id = 'tenant_b'")).rowcount == 0
    with deps.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM job WHERE tenant_id = 'tenant_b'")).scalar() == "open"


def test_app_role_has_no_access_to_system_only_tables(deps, two_tenants) -> None:
    for statement in ("SELECT * FROM alembic_version", "INSERT INTO task_log (task_id, batch_id) VALUES (1, 1)",
                      "INSERT INTO files (bucket, name, generation, tenant_id) VALUES ('b', 'n', 9, 'tenant_a')"):
        with pytest.raises(exc.ProgrammingError, match="permission denied"), deps.engine.connect() as conn, \
                conn.begin():
            as_app(conn, "tenant_a")
            conn.execute(text(statement))


def test_children_must_belong_to_their_jobs_tenant_even_for_the_system_role(deps, two_tenants) -> None:
    a, b = two_tenants["tenant_a"], two_tenants["tenant_b"]
    wrong = [
        ("INSERT INTO job_file (job_id, tenant_id, name, checksum, size, content_type, bucket, storage_path) "
         "VALUES (:job_a, 'tenant_b', 'x.csv', 'md5:x', 1, 'text/csv', 'uploads', 'x')"),
        "INSERT INTO artifacts (job_id, tenant_id, type, storage_path) VALUES (:job_a, 'tenant_b', 'summary', 'y')",
        ("INSERT INTO staging (job_id, job_file_id, entity_id, tenant_id, source_row_num, source_row_id, row_checksum, "
         "payload, provenance) VALUES (:job_b, :file_a, :entity_b, 'tenant_b', 1, 'z', 'h', '{}', '{}')"),
        ("INSERT INTO staging (job_id, job_file_id, entity_id, tenant_id, source_row_num, source_row_id, row_checksum, "
         "payload, provenance) VALUES (:job_a, :file_a, :entity_b, 'tenant_a', 1, 'z', 'h', '{}', '{}')"),
        "UPDATE job SET tenant_id = 'tenant_b' WHERE id = :job_a",
    ]
    params = {"job_a": a["job"], "job_b": b["job"], "file_a": a["job_file"], "entity_b": b["entity"]}
    for statement in wrong:
        with pytest.raises(exc.DBAPIError, match="violates foreign key constraint"), deps.engine.begin() as conn:
            conn.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})


def test_tenant_session_scopes_every_transaction_of_the_session(deps, two_tenants) -> None:
    job_a, job_b = two_tenants["tenant_a"]["job"], two_tenants["tenant_b"]["job"]
    with tenant_session(deps.sessions, "tenant_b") as session:
        assert current_tenant(session) == "tenant_b"
        assert jobs.get_job(session=session, job_id=job_a) is None
        assert jobs.get_job(session=session, job_id=job_b) is not None
        session.commit()  # a new transaction must be scoped again, not fall back to the owner
        assert session.execute(text("SELECT current_user")).scalar() == "caf_app"
        assert [j.tenant_id for j in session.scalars(select(Job))] == ["tenant_b"]
        assert jobs.file_by_path(session=session, bucket="uploads", path="tenant_a/a.csv") is None
    with pytest.raises(exc.ProgrammingError, match="row-level security"), \
            tenant_session(deps.sessions, "tenant_b") as session:
        session.add(JobFile(job_id=job_b, tenant_id="tenant_a", name="n", checksum="md5:x", size=1,
                            content_type="text/csv", bucket="uploads", storage_path="p"))
        session.flush()
    with deps.sessions() as session:  # the pooled connection came back as the owner, with no tenant
        assert session.execute(text("SELECT current_user")).scalar() != "caf_app"
        assert current_tenant(session) is None


def test_tenant_ids_are_validated(deps) -> None:
    for bad in ("", "Tenant", "a;drop", "x" * 64, "1abc", None):
        with pytest.raises(InvalidTenant), tenant_session(deps.sessions, bad):  # type: ignore[arg-type]
            pass
    assert tenant_dataset("sales", "tenant_a", per_tenant=True) == "tenant_a_sales"
    assert tenant_dataset("sales", "default", per_tenant=True) == "sales"
    assert tenant_dataset("sales", "tenant_a", per_tenant=False) == "sales"


def test_roles_and_forced_rls_are_in_place(deps) -> None:
    with deps.engine.connect() as conn:
        roles = dict(conn.execute(text("SELECT rolname, rolsuper OR rolbypassrls FROM pg_roles "
                                       "WHERE rolname IN ('caf_app', 'caf_system')")).all())
        assert roles == {"caf_app": False, "caf_system": False}
        flags = conn.execute(text("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                                  "WHERE relname = ANY(:t) AND relkind = 'r'"), {"t": list(RLS_TABLES)}).all()
        assert sorted(flags) == sorted((t, True, True) for t in RLS_TABLES)
        policies = conn.execute(text("SELECT tablename, policyname, roles FROM pg_policies")).all()
        assert {(t, p) for t, p, _ in policies} == {(t, p) for t in RLS_TABLES
                                                   for p in ("tenant_isolation", "system_access")}


def test_forced_rls_binds_a_non_superuser_owner_unless_it_is_in_caf_system(deps, two_tenants) -> None:
    owner = f"probe_{uuid.uuid4().hex[:8]}"
    with deps.engine.connect() as conn:
        trans = conn.begin()  # everything below, role included, is rolled back
        try:
            conn.execute(text(f"CREATE ROLE {owner} NOLOGIN"))
            conn.execute(text(f"ALTER TABLE job OWNER TO {owner}"))
            conn.execute(text(f"SET LOCAL ROLE {owner}"))
            assert conn.execute(text("SELECT count(*) FROM job")).scalar() == 0  # FORCE: the owner too
            conn.execute(text("RESET ROLE"))
            conn.execute(text(f"GRANT caf_system TO {owner}"))
            conn.execute(text(f"SET LOCAL ROLE {owner}"))
            assert conn.execute(text("SELECT count(*) FROM job")).scalar() == 2  # system_access: every tenant
        finally:
            trans.rollback()


def test_runs_edges_and_columns_stay_inside_their_tenant_even_for_the_system_role(deps, two_tenants) -> None:
    """Composite foreign keys (migration 0005): a tenant's batch can never hold another tenant's task run."""
    a, b = two_tenants["tenant_a"], two_tenants["tenant_b"]
    wrong = [
        ("INSERT INTO task_log (task_id, batch_id, tenant_id) VALUES (:task_a, :batch_b, 'tenant_b')",
         {"task_a": a["task"], "batch_b": b["batch"]}),
        ("INSERT INTO task_log (task_id, batch_id, tenant_id) VALUES (:task_a, :batch_b, 'tenant_a')",
         {"task_a": a["task"], "batch_b": b["batch"]}),
        ("INSERT INTO task_dependencies (parent_id, child_id, tenant_id) VALUES (:task_b, :task_a, 'tenant_a')",
         {"task_a": a["task"], "task_b": b["task"]}),
        ("INSERT INTO schemas (table_id, ordinal, name, type, tenant_id) VALUES (:table_a, 2, 'd', 'STRING', "
         "'tenant_b')", {"table_a": a["table"]}),
    ]
    for statement, params in wrong:
        with pytest.raises(exc.DBAPIError, match="violates foreign key constraint"), deps.engine.begin() as conn:
            conn.execute(text(statement), params)
