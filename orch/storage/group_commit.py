"""Writes from many threads committed together: whoever finds no write under way writes everyone's.

A dispatcher ends each attempt in a task thread of its own. As a transaction each, the ends took the
database's write turn once per task, next to the claims and the API's accepts: on a busy SQLite stack
the turn was held most of the time, and every other writer (the API's dispatch groups among them)
waited for it. :class:`GroupCommit` lets the ends that arrive while one is being written share the
next transaction (leader and followers, as in a database's own group commit): one alone waits for
nothing, and under load the turn is taken once per group instead of once per task.

It is the threads' counterpart of the API's :mod:`orch.api.dispatch_group`, which does the same for
coroutines on one event loop. ``write`` gets the items of one group and returns one outcome per item,
an ``Exception`` for an item that failed alone; what it raises reaches only the thread that called it,
and the others of that group are written by the next leader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Entry(Generic[Item, Outcome]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.outcome: Outcome | Exception | None = None
        self.done = False


class GroupCommit(Generic[Item, Outcome]):
    """Submit items from any number of threads; each gets its own outcome once its group is written."""

    def __init__(self, write: Callable[[list[Item]], list[Outcome | Exception]], max_group: int) -> None:
        self._write = write
        self._max_group = max_group
        self._changed = threading.Condition()
        self._pending: list[_Entry[Item, Outcome]] = []
        self._writing = False

    def submit(self, item: Item) -> Outcome:
        """Write ``item`` in the next group and return its outcome, or raise its exception."""
        entry: _Entry[Item, Outcome] = _Entry(item)
        with self._changed:
            self._pending.append(entry)
            while not entry.done:
                if self._writing:
                    self._changed.wait()
                    continue
                self._lead(entry)
        if isinstance(entry.outcome, Exception):
            raise entry.outcome
        return entry.outcome  # type: ignore[return-value]

    def _lead(self, entry: _Entry[Item, Outcome]) -> None:
        """Write the next group (called holding the condition, released while writing)."""
        group, self._pending = self._pending[:self._max_group], self._pending[self._max_group:]
        self._writing = True
        self._changed.release()
        try:
            outcomes = self._write([member.item for member in group])
        except BaseException:
            self._changed.acquire()
            # Only this thread hears of it (an interrupt, a bug): the rest of the group goes to the next leader.
            self._pending[:0] = [member for member in group if member is not entry]
            self._writing = False
            self._changed.notify_all()
            raise
        self._changed.acquire()
        for member, outcome in zip(group, outcomes, strict=True):
            member.outcome, member.done = outcome, True
        self._writing = False
        self._changed.notify_all()
