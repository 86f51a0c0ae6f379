"""task pages filtered by owner, by action, or by core and status walk an index newest first

Without them, at 1,000,000 tasks an owner's page sorted all of that owner's rows (1.7 s), an action that
matches nothing read every row (0.4 s) and a core-and-status page read the whole core (0.1 s); with them
each is 1-3 ms (scripts/bench_console.py). They cost 145 MB per million tasks.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_core_status_created', 'tasks', ['core_id', 'status', 'created_at'], unique=False)
    op.create_index('ix_tasks_owner_created', 'tasks', ['owner', 'created_at'], unique=False)
    op.create_index('ix_tasks_action_created', 'tasks', ['action', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tasks_action_created', table_name='tasks')
    op.drop_index('ix_tasks_owner_created', table_name='tasks')
    op.drop_index('ix_tasks_core_status_created', table_name='tasks')
