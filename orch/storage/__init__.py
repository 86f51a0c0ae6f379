"""Storage: one engine/session factory (:mod:`.engine`), models, Alembic migrations and health checks."""
