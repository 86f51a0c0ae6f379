"""webhook deliveries (replay protection shared by API replicas), users.last_failed_at (lockout window),
tasks index by core, status and queue position (the API's estimated start)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 21:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('received_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('signature')
    )
    op.create_index('ix_webhook_deliveries_received', 'webhook_deliveries', ['received_at'], unique=False)
    op.drop_index('ix_tasks_core_status', table_name='tasks')
    op.create_index('ix_tasks_core_queue', 'tasks', ['core_id', 'status', 'sort_key'], unique=False)
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('last_failed_at', orch.storage.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_index('ix_tasks_core_queue', table_name='tasks')
    op.create_index('ix_tasks_core_status', 'tasks', ['core_id', 'status'], unique=False)
    with op.batch_alter_table('users') as batch:
        batch.drop_column('last_failed_at')
    op.drop_index('ix_webhook_deliveries_received', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
