"""ORCH's tables of record. Prefect keeps run state; these keep what Prefect has no notion of.

Every change to this module needs an Alembic revision in ``migrations/versions``; a test compares the
two so they cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orch.storage.types import UTCDateTime, utcnow

TASK_STATUSES = ("queued", "running", "completed", "failed", "timed_out", "cancelled")
ROLES = ("admin", "operator", "viewer", "system")


class Base(DeclarativeBase):
    """The metadata Alembic compares the migrations against."""


class Task(Base):
    """A unit of work dispatched to a core (``core_id``, e.g. ``WORK_AI_01``)."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_tasks_owner_idempotency_key"),
        Index("ix_tasks_queue", "status", "sort_key"),
        Index("ix_tasks_lease", "status", "lease_expires_at"),
        Index("ix_tasks_created_at", "created_at"),
        Index("ix_tasks_core_queue", "core_id", "status", "sort_key"),  # per-core counts and queue position
        Index("ix_tasks_status_created", "status", "created_at"),  # task pages filtered by status, newest first
        Index("ix_tasks_core_created", "core_id", "created_at"),  # task pages filtered by core, newest first
        Index("ix_tasks_core_status_created", "core_id", "status", "created_at"),  # ... by core and status
        Index("ix_tasks_owner_created", "owner", "created_at"),  # ... by owner
        Index("ix_tasks_action_created", "action", "created_at"),  # ... by action
    )

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    core_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[int] = mapped_column(Integer)
    stay: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    owner: Mapped[str] = mapped_column(String(128), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    locks: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Queue order: the task's virtual deadline in epoch seconds (see orch.dispatch.ordering).
    sort_key: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[TaskEvent]] = relationship(back_populates="task", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class CoreLoad(Base):
    """How many tasks are queued and running on a core, kept by triggers on ``tasks`` (migration 0011)
    instead of counted per accept: a core's counts are the sums over its rows (one on SQLite; on
    PostgreSQL one per statement that moved its tasks, folded now and then by
    :func:`orch.dispatch.core_load.fold`)."""

    __tablename__ = "core_load"

    core_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    queued: Mapped[int] = mapped_column(BigInteger)
    running: Mapped[int] = mapped_column(BigInteger)


class TaskEvent(Base):
    """Every status move of a task (``task.created``, ``task.started`` ...), in order."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_task", "task_id", "event_id"),
                      Index("ix_task_events_timestamp", "timestamp"))

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.task_id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(32))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    task: Mapped[Task] = relationship(back_populates="events")


class CoreReservation(Base):
    """A core kept for one owner after a ``stay`` task ended, until released or expired."""

    __tablename__ = "core_reservations"

    core_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    task_id: Mapped[str | None] = mapped_column(String(36))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ResourceLock(Base):
    """A held lock: by a running task (owner ``task:<id>``, expiring with its lease) or by a flow."""

    __tablename__ = "resource_locks"

    resource: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LockWaiter(Base):
    """Someone (not a queued task: those wait in the queue) waiting for a lock, in ``sort_key`` order."""

    __tablename__ = "lock_waiters"
    __table_args__ = (Index("ix_lock_waiters_order", "resource", "sort_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer)
    sort_key: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # a waiter that stops polling is dropped


class LockStats(Base):
    """Per-resource counters for ``orch locks list``: how often and how long people waited."""

    __tablename__ = "lock_stats"

    resource: Mapped[str] = mapped_column(String(128), primary_key=True)
    acquisitions: Mapped[int] = mapped_column(Integer, default=0)
    total_wait_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    max_wait_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    timeouts: Mapped[int] = mapped_column(Integer, default=0)
    expirations: Mapped[int] = mapped_column(Integer, default=0)


class User(Base):
    """A person or service that may call the API, with one role."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Raised by every change of password, role or state; a token carries the value it was issued at
    # and is refused once they differ, so credentials that change take their old tokens with them.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditRecord(Base):
    """Who did what to which resource, from where, and whether it worked. Never holds secrets."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_timestamp", "timestamp"),
                      Index("ix_audit_log_actor", "actor"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginThrottle(Base):
    """Failed logins for one user from one client address (``address`` ``*``: from all of them).

    Keyed by the name as typed, whether or not such a user exists, so throttling reveals no names. An
    address waits until ``blocked_until`` before its next attempt is even checked; ``last_success_at``
    marks an address that has logged in as the user, which the user-wide slow-down spares.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (Index("ix_login_throttles_last_failed", "last_failed_at"),)

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """A signed webhook delivery already accepted, so a replay of it is refused on every API replica.

    Rows older than the signature tolerance are useless (the timestamp check refuses those already)
    and are purged as new deliveries arrive.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_received", "received_at"),)

    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitorSample(Base):
    """One measurement of one sweep: ``metric`` about ``subject`` (``host``, a disk path, a target, a priority).

    Kept ``monitoring.metrics_retention`` seconds; the alert rules (for-durations, EWMA) and the Prometheus
    collector read them, so every process reports the same values.
    """

    __tablename__ = "monitor_samples"
    __table_args__ = (Index("ix_monitor_samples_series", "metric", "subject", "timestamp"),
                      Index("ix_monitor_samples_timestamp", "timestamp"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    metric: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255), default="host")
    value: Mapped[float] = mapped_column(Float)


class Alert(Base):
    """The current state of one alert (rule ``alert_name`` about ``target``): one row per pair, de-duplicated."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("alert_name", "target", name="uq_alerts_name_target"),
                      Index("ix_alerts_state", "state"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_name: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # pending, firing, flapping, resolved
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    transitions: Mapped[list[str]] = mapped_column(JSON, default=list)  # ISO times of fire/resolve changes
    # The alert's life includes its heals: what the last heal request came to (requested, healed, failed,
    # skipped, circuit_open, dry_run), when, and how many heals this firing has asked for. A target that
    # is down again after a heal ended healthy is healed again; see orch.monitoring.alerts.
    heal_state: Mapped[str | None] = mapped_column(String(16))
    heal_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AlertEvent(Base):
    """Every alert state change, in order; the API's SSE stream reads it by ``id``."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_timestamp", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    alert_name: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)


class Silence(Base):
    """A silence (some alerts) or maintenance window (every alert) on targets matching ``target`` (a glob).

    While active it suppresses notifications and healing for what matches; ``ended_at`` ends it early.
    """

    __tablename__ = "silences"
    __table_args__ = (Index("ix_silences_ends_at", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # silence, maintenance
    target: Mapped[str] = mapped_column(String(255))
    alert_name: Mapped[str] = mapped_column(String(64), default="*")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HealRun(Base):
    """One self-heal flow run on a target: what it did and how it ended (the circuit breaker counts these)."""

    __tablename__ = "heal_runs"
    __table_args__ = (Index("ix_heal_runs_target", "target", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(255))
    alert_name: Mapped[str] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # running, healed, failed, circuit_open, dry_run, skipped
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class RuntimeSwitch(Base):
    """A switch an operator flips while ORCH runs (``maintenance_mode``): every API replica and worker reads
    it from here (each at most once a second, :mod:`orch.maintenance_mode`), so no restart is needed.

    ``since``/``changed_by``/``reason`` say who set the current value, when and why; the audit trail keeps
    the history.
    """

    __tablename__ = "runtime_switches"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
