"""tenant_id on task_log, task_dependencies and schemas; tenant-consistent foreign keys; RLS on them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:30:00

The three tables had no tenant, so the application role (caf_app) could not read them and the
operator pages had to read as the owner. Now each row carries its tenant, copied from its parent
(task_log: its batch; task_dependencies: the child task; schemas: the table), and composite
foreign keys keep it consistent even for the system role:

- task_log (task_id, tenant_id) → tasks (id, tenant_id) and (batch_id, tenant_id) → task_batch:
  a tenant's batch can never run another tenant's task;
- task_dependencies (parent_id | child_id, tenant_id) → tasks: a DAG never crosses tenants;
- schemas (table_id, tenant_id) → tables.

Runs recorded before this revision in another tenant's batch (issue 11: a file of one tenant
started every tenant's `on_file` tasks) keep their batch's tenant; the task foreign key is then
added NOT VALID (enforced for every new row) and a NOTICE names how many rows disagree.
Row-level security, the two policies and SELECT for caf_app follow migration 0002.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

APP_ROLE = 'caf_app'
SYSTEM_ROLE = 'caf_system'
TABLES = ('task_log', 'task_dependencies', 'schemas')
TENANT_MATCH = "tenant_id = current_setting('app.tenant_id', true)"
# (table, constraint, columns, referred table, referred columns, the single-column key it replaces)
FOREIGN_KEYS = (
    ('task_log', 'fk_task_log_batch_id_task_batch', 'batch_id, tenant_id', 'task_batch', 'id, tenant_id', 'batch_id'),
    ('task_log', 'fk_task_log_task_id_tasks', 'task_id, tenant_id', 'tasks', 'id, tenant_id', 'task_id'),
    ('task_dependencies', 'fk_task_dependencies_parent_id_tasks', 'parent_id, tenant_id', 'tasks', 'id, tenant_id',
     'parent_id'),
    ('task_dependencies', 'fk_task_dependencies_child_id_tasks', 'child_id, tenant_id', 'tasks', 'id, tenant_id',
     'child_id'),
    ('schemas', 'fk_schemas_table_id_tables', 'table_id, tenant_id', 'tables', 'id, tenant_id', 'table_id'),
)


def upgrade() -> None:
    for table in ('tasks', 'task_batch', 'tables'):
        op.create_unique_constraint(op.f(f'uq_{table}_id_tenant_id'), table, ['id', 'tenant_id'])
    for table in TABLES:
        op.add_column(table, sa.Column('tenant_id', sa.String(length=63), server_default='default', nullable=False))
        op.create_index(op.f(f'ix_{table}_tenant_id'), table, ['tenant_id'], unique=False)
    op.execute("UPDATE task_log l SET tenant_id = b.tenant_id FROM task_batch b WHERE b.id = l.batch_id")
    op.execute("UPDATE task_dependencies d SET tenant_id = t.tenant_id FROM tasks t WHERE t.id = d.child_id")
    op.execute("UPDATE schemas s SET tenant_id = t.tenant_id FROM tables t WHERE t.id = s.table_id")
    for table, name, columns, referred, referred_columns, _ in FOREIGN_KEYS:
        op.drop_constraint(name, table, type_='foreignkey')
        op.execute(f'ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({columns}) '
                   f'REFERENCES {referred} ({referred_columns}) ON DELETE CASCADE NOT VALID')
        op.execute(f"""
        DO $$
        BEGIN
            ALTER TABLE {table} VALIDATE CONSTRAINT {name};
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE NOTICE '{table}: rows recorded across tenants before revision 0005 break {name}; '
                         'it is enforced for new rows (NOT VALID). See docs/tenancy.md, upgrading.';
        END $$""")
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {APP_ROLE}")
    op.execute(f"GRANT ALL ON {', '.join(TABLES)} TO {SYSTEM_ROLE}")
    for table in TABLES:
        op.execute(f'ALTER TABLE {table} ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} FORCE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY tenant_isolation ON {table} AS PERMISSIVE FOR ALL TO {APP_ROLE} '
                   f'USING ({TENANT_MATCH}) WITH CHECK ({TENANT_MATCH})')
        op.execute(f'CREATE POLICY system_access ON {table} AS PERMISSIVE FOR ALL TO {SYSTEM_ROLE} '
                   'USING (true) WITH CHECK (true)')


def downgrade() -> None:
    for table in TABLES:
        op.execute(f'DROP POLICY IF EXISTS system_access ON {table}')
        op.execute(f'DROP POLICY IF EXISTS tenant_isolation ON {table}')
        op.execute(f'ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} DISABLE ROW LEVEL SECURITY')
    op.execute(f"REVOKE SELECT ON {', '.join(TABLES)} FROM {APP_ROLE}")
    for table, name, _, referred, _, column in FOREIGN_KEYS:
        op.drop_constraint(name, table, type_='foreignkey')
        op.create_foreign_key(name, table, referred, [column], ['id'], ondelete='CASCADE')
    for table in TABLES:
        op.drop_index(op.f(f'ix_{table}_tenant_id'), table_name=table)
        op.drop_column(table, 'tenant_id')
    for table in ('tasks', 'task_batch', 'tables'):
        op.drop_constraint(op.f(f'uq_{table}_id_tenant_id'), table, type_='unique')
