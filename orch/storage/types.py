"""Column types that behave the same on SQLite and PostgreSQL, and the clock of record."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection, DateTime, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out.

    SQLite has no time zones and would hand back naive datetimes; comparing those with aware ones
    raises, so every value is normalised to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    """This host's clock: for timestamps only shown to people, and the clock of record on SQLite."""
    return datetime.now(timezone.utc)


# The database's clock at the moment the expression is evaluated (not the transaction's start, which can
# lie before a wait for a lock), as a UTC datetime; PostgreSQL only. For a hot path that can read it as
# one more column of a statement it runs anyway, instead of a round trip of its own.
DATABASE_NOW = func.clock_timestamp(type_=UTCDateTime)


def reads_database_clock(bind: Session | Connection) -> bool:
    """True where the clock of record is the database's (PostgreSQL), False where it is this host's
    (SQLite: one file on one host, so every process that opens it reads the same clock)."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name != "sqlite"


def clock_of_record(bind: Session | Connection) -> datetime:
    """Now, by the clock every host agrees on: what leases, lock TTLs, reservations and queue order
    are stamped with and compared against.

    Several hosts share a PostgreSQL database and their clocks differ: a host 40 s ahead would see
    live leases as lapsed and take over tasks still running elsewhere; one behind would leave lapsed
    leases alone and sort its tasks ahead of everyone's. Reading the one database clock instead makes
    every host agree. Costs a round trip on PostgreSQL: hot paths read :data:`DATABASE_NOW` inside a
    statement they run anyway."""
    if not reads_database_clock(bind):
        return utcnow()
    return bind.execute(select(DATABASE_NOW)).scalar_one()
