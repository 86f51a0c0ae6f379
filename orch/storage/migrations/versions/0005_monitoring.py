"""monitoring: samples, alerts, alert events, silences and maintenance windows, heal runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orch.storage.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

UTC = orch.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('monitor_samples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('timestamp', UTC, nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_monitor_samples_series', 'monitor_samples', ['metric', 'subject', 'timestamp'])
    op.create_index('ix_monitor_samples_timestamp', 'monitor_samples', ['timestamp'])
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_name', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('pending_since', UTC, nullable=True),
    sa.Column('fired_at', UTC, nullable=True),
    sa.Column('resolved_at', UTC, nullable=True),
    sa.Column('last_notified_at', UTC, nullable=True),
    sa.Column('transitions', sa.JSON(), nullable=False),
    sa.Column('updated_at', UTC, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_name', 'target', name='uq_alerts_name_target')
    )
    op.create_index('ix_alerts_state', 'alerts', ['state'])
    op.create_table('alert_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('timestamp', UTC, nullable=False),
    sa.Column('alert_name', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alert_events_timestamp', 'alert_events', ['timestamp'])
    op.create_table('silences',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('alert_name', sa.String(length=64), nullable=False),
    sa.Column('starts_at', UTC, nullable=False),
    sa.Column('ends_at', UTC, nullable=False),
    sa.Column('ended_at', UTC, nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_silences_ends_at', 'silences', ['ends_at'])
    op.create_table('heal_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('alert_name', sa.String(length=64), nullable=False),
    sa.Column('flow_run_id', sa.String(length=36), nullable=True),
    sa.Column('started_at', UTC, nullable=False),
    sa.Column('finished_at', UTC, nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_heal_runs_target', 'heal_runs', ['target', 'started_at'])


def downgrade() -> None:
    op.drop_index('ix_heal_runs_target', table_name='heal_runs')
    op.drop_table('heal_runs')
    op.drop_index('ix_silences_ends_at', table_name='silences')
    op.drop_table('silences')
    op.drop_index('ix_alert_events_timestamp', table_name='alert_events')
    op.drop_table('alert_events')
    op.drop_index('ix_alerts_state', table_name='alerts')
    op.drop_table('alerts')
    op.drop_index('ix_monitor_samples_timestamp', table_name='monitor_samples')
    op.drop_index('ix_monitor_samples_series', table_name='monitor_samples')
    op.drop_table('monitor_samples')
