"""upload jobs, JSONB staging, tenant isolation by row-level security

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:11:23.544619

Creates the job registry (job, job_file, artifacts), the staging of semi-structured rows
(staging_entity, staging), two NOLOGIN roles and the row-level security policies:

- caf_app: the role tenant-scoped code switches to (`SET LOCAL ROLE caf_app`). Not a superuser,
  no BYPASSRLS; sees and writes only rows whose tenant_id equals the transaction's
  `app.tenant_id` setting (unset: nothing).
- caf_system: granted to the migrating user (the table owner). RLS is FORCEd, so the owner is
  subject to policies too; the `system_access` policy lets members of caf_system see every
  tenant, which is how ingestion and the task engine keep working unchanged.

Roles are cluster-wide: upgrade creates them only if missing; downgrade revokes this database's
grants and drops the roles only when no other database still uses them. See docs/tenancy.md.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

APP_ROLE = 'caf_app'
SYSTEM_ROLE = 'caf_system'
TENANT_TABLES = ('files', 'task_batch', 'domain', 'tables', 'tasks', 'query', 'repo', 'power_bi_report',
                 'outbox', 'job', 'job_file', 'artifacts', 'staging_entity', 'staging')
APP_WRITES = ('job', 'job_file', 'artifacts', 'staging')
APP_READS = tuple(t for t in TENANT_TABLES if t not in APP_WRITES)
APP_SEQUENCES = ('job_file_id_seq', 'artifacts_id_seq', 'staging_id_seq')
TENANT_MATCH = "tenant_id = current_setting('app.tenant_id', true)"


def _create_role(name: str) -> None:
    op.execute(f"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
            CREATE ROLE {name} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        END IF;
    EXCEPTION WHEN duplicate_object THEN NULL;  -- created concurrently by another database's migration
    END $$""")
    op.execute(f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}' AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'role {name} must be NOSUPERUSER NOBYPASSRLS for row-level security to hold';
        END IF;
    END $$""")


def _drop_role_if_unused(name: str) -> None:
    op.execute(f"""
    DO $$
    BEGIN
        DROP ROLE IF EXISTS {name};
    EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
        RAISE NOTICE 'role {name} kept: still used by another database or not ours to drop';
    END $$""")


def upgrade() -> None:
    op.create_table('job',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('fileset_key', sa.String(length=64), nullable=False),
    sa.Column('requested_by', sa.String(length=320), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finalized_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('open', 'uploading', 'ready', 'ingesting', 'done', 'failed', 'canceled')", name=op.f('ck_job_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job')),
    sa.UniqueConstraint('id', 'tenant_id', name=op.f('uq_job_id_tenant_id'))
    )
    op.create_index(op.f('ix_job_tenant_id'), 'job', ['tenant_id'], unique=False)
    op.create_index('uq_job_open_fileset', 'job', ['tenant_id', 'fileset_key'], unique=True, postgresql_where=sa.text("status IN ('open', 'uploading')"))
    op.create_table('staging_entity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('source_glob', sa.Text(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('column_map', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('required', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("format IN ('csv', 'ndjson')", name=op.f('ck_staging_entity_format')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staging_entity')),
    sa.UniqueConstraint('id', 'tenant_id', name=op.f('uq_staging_entity_id_tenant_id')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_staging_entity_tenant_id_name'))
    )
    op.create_index(op.f('ix_staging_entity_tenant_id'), 'staging_entity', ['tenant_id'], unique=False)
    op.create_table('artifacts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('storage_path', sa.Text(), nullable=False),
    sa.Column('checksum', sa.String(length=80), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("type IN ('validation_report', 'quarantine', 'summary')", name=op.f('ck_artifacts_type')),
    sa.ForeignKeyConstraint(['job_id', 'tenant_id'], ['job.id', 'job.tenant_id'], name=op.f('fk_artifacts_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('job_id', 'storage_path', name=op.f('uq_artifacts_job_id_storage_path'))
    )
    op.create_index(op.f('ix_artifacts_tenant_id'), 'artifacts', ['tenant_id'], unique=False)
    op.create_table('job_file',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('checksum', sa.String(length=80), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('bucket', sa.String(length=222), nullable=False),
    sa.Column('storage_path', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'uploaded', 'verified', 'failed')", name=op.f('ck_job_file_status')),
    sa.CheckConstraint('size >= 0', name=op.f('ck_job_file_size')),
    sa.ForeignKeyConstraint(['job_id', 'tenant_id'], ['job.id', 'job.tenant_id'], name=op.f('fk_job_file_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_file')),
    sa.UniqueConstraint('bucket', 'storage_path', name=op.f('uq_job_file_bucket_storage_path')),
    sa.UniqueConstraint('id', 'job_id', 'tenant_id', name=op.f('uq_job_file_id_job_id_tenant_id')),
    sa.UniqueConstraint('job_id', 'name', name=op.f('uq_job_file_job_id_name'))
    )
    op.create_index(op.f('ix_job_file_tenant_id'), 'job_file', ['tenant_id'], unique=False)
    op.create_table('staging',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('job_file_id', sa.BigInteger(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('source_row_num', sa.BigInteger(), nullable=False),
    sa.Column('source_row_id', sa.Text(), nullable=False),
    sa.Column('row_checksum', sa.String(length=64), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('provenance', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('validation_errors', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('source_row_num >= 1', name=op.f('ck_staging_source_row_num')),
    sa.ForeignKeyConstraint(['entity_id', 'tenant_id'], ['staging_entity.id', 'staging_entity.tenant_id'], name=op.f('fk_staging_entity_id_staging_entity'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_file_id', 'job_id', 'tenant_id'], ['job_file.id', 'job_file.job_id', 'job_file.tenant_id'], name=op.f('fk_staging_job_file_id_job_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id', 'tenant_id'], ['job.id', 'job.tenant_id'], name=op.f('fk_staging_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staging')),
    sa.UniqueConstraint('job_id', 'source_row_id', name=op.f('uq_staging_job_id_source_row_id'))
    )
    op.create_index('ix_staging_entity_id_job_id', 'staging', ['entity_id', 'job_id'], unique=False)
    op.create_index(op.f('ix_staging_job_file_id'), 'staging', ['job_file_id'], unique=False)
    op.create_index('ix_staging_tenant_id_row_checksum', 'staging', ['tenant_id', 'row_checksum'], unique=False)
    _create_role(APP_ROLE)
    _create_role(SYSTEM_ROLE)
    # The migrating user (the owner) may switch to caf_app and has caf_system's privileges.
    op.execute(f'GRANT {APP_ROLE}, {SYSTEM_ROLE} TO CURRENT_USER')
    op.execute(f"""
    DO $$
    BEGIN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}, {SYSTEM_ROLE}', current_schema());
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO {SYSTEM_ROLE}', current_schema());
        EXECUTE format('GRANT ALL ON ALL SEQUENCES IN SCHEMA %I TO {SYSTEM_ROLE}', current_schema());
    END $$""")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(APP_WRITES)} TO {APP_ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(APP_READS)} TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(APP_SEQUENCES)} TO {APP_ROLE}")
    for table in TENANT_TABLES:
        op.execute(f'ALTER TABLE {table} ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} FORCE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY tenant_isolation ON {table} AS PERMISSIVE FOR ALL TO {APP_ROLE} '
                   f'USING ({TENANT_MATCH}) WITH CHECK ({TENANT_MATCH})')
        op.execute(f'CREATE POLICY system_access ON {table} AS PERMISSIVE FOR ALL TO {SYSTEM_ROLE} '
                   'USING (true) WITH CHECK (true)')


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.execute(f'DROP POLICY IF EXISTS system_access ON {table}')
        op.execute(f'DROP POLICY IF EXISTS tenant_isolation ON {table}')
        op.execute(f'ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} DISABLE ROW LEVEL SECURITY')
    op.drop_index('ix_staging_tenant_id_row_checksum', table_name='staging')
    op.drop_index(op.f('ix_staging_job_file_id'), table_name='staging')
    op.drop_index('ix_staging_entity_id_job_id', table_name='staging')
    op.drop_table('staging')
    op.drop_index(op.f('ix_job_file_tenant_id'), table_name='job_file')
    op.drop_table('job_file')
    op.drop_index(op.f('ix_artifacts_tenant_id'), table_name='artifacts')
    op.drop_table('artifacts')
    op.drop_index(op.f('ix_staging_entity_tenant_id'), table_name='staging_entity')
    op.drop_table('staging_entity')
    op.drop_index('uq_job_open_fileset', table_name='job', postgresql_where=sa.text("status IN ('open', 'uploading')"))
    op.drop_index(op.f('ix_job_tenant_id'), table_name='job')
    op.drop_table('job')
    op.execute(f"""
    DO $$
    BEGIN
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM {APP_ROLE}, {SYSTEM_ROLE}', current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM {APP_ROLE}, {SYSTEM_ROLE}', current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM {APP_ROLE}, {SYSTEM_ROLE}', current_schema());
    END $$""")
    _drop_role_if_unused(APP_ROLE)
    _drop_role_if_unused(SYSTEM_ROLE)
