"""resource locks, lock waiters, lock stats

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 19:26:35.699905
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lock_stats',
    sa.Column('resource', sa.String(length=128), nullable=False),
    sa.Column('acquisitions', sa.Integer(), nullable=False),
    sa.Column('total_wait_seconds', sa.Float(), nullable=False),
    sa.Column('max_wait_seconds', sa.Float(), nullable=False),
    sa.Column('timeouts', sa.Integer(), nullable=False),
    sa.Column('expirations', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('resource')
    )
    op.create_table('lock_waiters',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('resource', sa.String(length=128), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('sort_key', sa.Float(), nullable=False),
    sa.Column('requested_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('lock_waiters', schema=None) as batch_op:
        batch_op.create_index('ix_lock_waiters_order', ['resource', 'sort_key'], unique=False)

    op.create_table('resource_locks',
    sa.Column('resource', sa.String(length=128), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('acquired_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', orch.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resource')
    )


def downgrade() -> None:
    op.drop_table('resource_locks')
    with op.batch_alter_table('lock_waiters', schema=None) as batch_op:
        batch_op.drop_index('ix_lock_waiters_order')

    op.drop_table('lock_waiters')
    op.drop_table('lock_stats')
