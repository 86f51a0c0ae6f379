"""Alembic environment: always driven from :mod:`orch.storage.migrate`, never from an alembic.ini."""

from __future__ import annotations

from alembic import context

from orch.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs table rebuilds for ALTER
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
