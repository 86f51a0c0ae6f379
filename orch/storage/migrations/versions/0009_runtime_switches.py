"""runtime switches (maintenance mode) that every process reads without a restart

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

UTC = orch.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('runtime_switches',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Boolean(), nullable=False),
    sa.Column('since', UTC, nullable=False),
    sa.Column('changed_by', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('runtime_switches')
