"""Queue order: priorities, and aging as a virtual deadline.

A task's sort key is ``enqueued_at - priority * aging_seconds`` (epoch seconds); the queue runs the
smallest key first. That single number gives all three rules at once:

* higher priority first: a ``critical`` task is placed ``3 * aging_seconds`` ahead of a ``low`` one
  dispatched at the same moment;
* first in, first out within a priority: same priority, earlier ``enqueued_at``, smaller key;
* aging without starvation: a task's key never changes while everything dispatched later gets a larger
  base, so a ``low`` task is passed only by tasks whose key is smaller, i.e. tasks dispatched less than
  ``3 * aging_seconds`` after it (or before it). Its wait is bounded by ``3 * aging_seconds`` plus the
  time to run the tasks queued ahead of it; with the default 60 s, three minutes.

Keys are made from the clock of record (:func:`orch.storage.types.clock_of_record`: the database's on
PostgreSQL), never an enqueuing host's own: a host whose clock ran a minute behind would otherwise place
its tasks a minute ahead of everyone else's, the same unfairness as a priority it was never given.

A stored, constant key keeps the claim query an index range scan (``status, sort_key``) on SQLite and
PostgreSQL alike, instead of computing an age-dependent priority for every queued row on every claim.
"""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """Named levels, stored as integers. The original system's default priority 1 is ``normal``."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept a name (``"high"``) or an integer 0-3, as the API and CLI receive them."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, bool):
            raise ValueError("must be a priority name or 0-3")  # noqa: TRY004 - pydantic reports ValueErrors
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            number = int(value)
            if number in cls._value2member_map_:
                return cls(number)
            raise ValueError(f"must be 0-3 or one of {', '.join(cls.names())}, got {number}")
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        raise ValueError(f"must be one of {', '.join(cls.names())} (or 0-3), got {value!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [member.name.lower() for member in sorted(cls, reverse=True)]

    @property
    def label(self) -> str:
        return self.name.lower()


def sort_key(enqueued_at: float, priority: Priority, aging_seconds: float) -> float:
    """The virtual deadline described in the module docstring."""
    return enqueued_at - int(priority) * aging_seconds


def enqueued_at(key: float, priority: Priority, aging_seconds: float) -> float:
    """When a task took its place in the queue (epoch seconds), by the clock its key was made with."""
    return key + int(priority) * aging_seconds
