"""alerts remember their heals: the last heal's outcome, when, and how many this firing asked for

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

UTC = orch.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('alerts') as batch:
        batch.add_column(sa.Column('heal_state', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('heal_at', UTC, nullable=True))
        batch.add_column(sa.Column('heals', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('alerts') as batch:
        batch.drop_column('heals')
        batch.drop_column('heal_at')
        batch.drop_column('heal_state')
