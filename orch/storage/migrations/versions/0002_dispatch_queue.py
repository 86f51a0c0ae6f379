"""dispatch queue: sort key, leases, locks, core reservations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:16:08.886564
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('core_reservations',
    sa.Column('core_id', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('expires_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('core_id')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        # Server defaults let existing rows take the new NOT NULL columns; tasks queued before this
        # revision sort first (key 0), i.e. they keep running ahead of anything dispatched after it.
        batch_op.add_column(sa.Column('locks', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('sort_key', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', orch.storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f('ix_tasks_queue'))
        batch_op.create_index('ix_tasks_queue', ['status', 'sort_key'], unique=False)
        batch_op.create_index('ix_tasks_lease', ['status', 'lease_expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_lease')
        batch_op.drop_index('ix_tasks_queue')
        batch_op.create_index(batch_op.f('ix_tasks_queue'), ['status', 'priority', 'created_at'], unique=False)
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('lease_owner')
        batch_op.drop_column('sort_key')
        batch_op.drop_column('locks')

    op.drop_table('core_reservations')
