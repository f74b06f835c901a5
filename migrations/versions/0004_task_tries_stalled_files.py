"""task_try: every earlier try of a task run; files.last_error / released_at: stalled files

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00

task_try keeps a task run's earlier tries (RETRIED after a transient failure, ERROR / SKIPPED
before a restart), so a restart no longer overwrites what failed. It belongs to its batch's
tenant: row-level security like task_batch (caf_app reads its tenant's rows, caf_system all).

files.last_error keeps the last transient failure after the claim is given back, and
files.released_at when that happened: a NEW file released long ago got no redelivery (stalled).
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TENANT_MATCH = "tenant_id = current_setting('app.tenant_id', true)"


def upgrade() -> None:
    op.add_column('files', sa.Column('last_error', sa.Text(), nullable=True))
    op.add_column('files', sa.Column('released_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('task_try',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('task_log_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('restart', sa.Integer(), server_default='0', nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
              nullable=False),
    sa.Column('remote_id', sa.Text(), nullable=True),
    sa.Column('tenant_id', sa.String(length=63), server_default='default', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('ERROR', 'SKIPPED', 'RETRIED')", name=op.f('ck_task_try_status')),
    sa.ForeignKeyConstraint(['batch_id'], ['task_batch.id'], name=op.f('fk_task_try_batch_id_task_batch'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_try_task_id_tasks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_log_id'], ['task_log.id'], name=op.f('fk_task_try_task_log_id_task_log'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_try'))
    )
    op.create_index(op.f('ix_task_try_batch_id'), 'task_try', ['batch_id'], unique=False)
    op.create_index(op.f('ix_task_try_task_log_id'), 'task_try', ['task_log_id'], unique=False)
    op.create_index(op.f('ix_task_try_tenant_id'), 'task_try', ['tenant_id'], unique=False)
    op.execute('GRANT ALL ON task_try TO caf_system')
    op.execute('GRANT ALL ON SEQUENCE task_try_id_seq TO caf_system')
    op.execute('GRANT SELECT ON task_try TO caf_app')
    op.execute('ALTER TABLE task_try ENABLE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE task_try FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON task_try AS PERMISSIVE FOR ALL TO caf_app '
               f'USING ({TENANT_MATCH}) WITH CHECK ({TENANT_MATCH})')
    op.execute('CREATE POLICY system_access ON task_try AS PERMISSIVE FOR ALL TO caf_system '
               'USING (true) WITH CHECK (true)')


def downgrade() -> None:
    op.drop_index(op.f('ix_task_try_tenant_id'), table_name='task_try')
    op.drop_index(op.f('ix_task_try_task_log_id'), table_name='task_try')
    op.drop_index(op.f('ix_task_try_batch_id'), table_name='task_try')
    op.drop_table('task_try')
    op.drop_column('files', 'released_at')
    op.drop_column('files', 'last_error')
