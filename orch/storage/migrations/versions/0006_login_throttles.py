"""login throttles per (user, address) in place of the account lock; users.token_version (tokens die
with the credentials they were issued for)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

UTC = orch.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('login_throttles',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_failed_at', UTC, nullable=True),
    sa.Column('blocked_until', UTC, nullable=True),
    sa.Column('last_success_at', UTC, nullable=True),
    sa.PrimaryKeyConstraint('username', 'address')
    )
    op.create_index('ix_login_throttles_last_failed', 'login_throttles', ['last_failed_at'])
    with op.batch_alter_table('users') as batch:
        # Existing users start at version 0; tokens issued before this revision carry no version and
        # are refused (they live at most security.jwt_expiry; users log in again once).
        batch.add_column(sa.Column('token_version', sa.Integer(), nullable=False, server_default='0'))
        batch.drop_column('failed_attempts')
        batch.drop_column('locked_until')
        batch.drop_column('last_failed_at')


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('last_failed_at', UTC, nullable=True))
        batch.add_column(sa.Column('locked_until', UTC, nullable=True))
        batch.add_column(sa.Column('failed_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch.drop_column('token_version')
    op.drop_index('ix_login_throttles_last_failed', table_name='login_throttles')
    op.drop_table('login_throttles')
