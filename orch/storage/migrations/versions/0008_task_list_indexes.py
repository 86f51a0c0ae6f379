"""task pages filtered by status or core walk an index newest first

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_status_created', 'tasks', ['status', 'created_at'], unique=False)
    op.create_index('ix_tasks_core_created', 'tasks', ['core_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tasks_core_created', table_name='tasks')
    op.drop_index('ix_tasks_status_created', table_name='tasks')
