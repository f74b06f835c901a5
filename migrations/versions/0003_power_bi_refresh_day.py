"""power_bi_refresh_day: the Power BI daily refresh limit, taken atomically per dataset and day

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:40:00

One row per (dataset, UTC day) counts the refreshes CAF started; a task takes a slot with one
conditional UPDATE (row lock), so concurrent starts at the limit cannot both pass. Read and
written only by the task engine (owner / caf_system), never by tenant-scoped code.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('power_bi_refresh_day',
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('used', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('dataset_id', 'day', name=op.f('pk_power_bi_refresh_day'))
    )
    op.execute('GRANT ALL ON power_bi_refresh_day TO caf_system')


def downgrade() -> None:
    op.drop_table('power_bi_refresh_day')
