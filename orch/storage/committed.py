"""Work that says something happened, done only once the transaction that made it happen has committed.

The audit trail's file lines (:mod:`orch.audit`) and the task moves' log lines
(:mod:`orch.dispatch.task_history`) are read when the database is gone; written before the commit, a
transaction rolled back left them claiming what never happened. Queued with :func:`after_commit`, the
work runs once the session's transaction commits and is dropped when it rolls back; a savepoint rolled
back alone inside a transaction that commits (a group of dispatches, :mod:`orch.api.dispatch_group`)
takes the work queued inside it with it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_PENDING = "orch_after_commit"
_MARKS = "orch_after_commit_savepoints"  # savepoint -> how much work was pending when it began


def after_commit(session: Session, work: Callable[[], object]) -> None:
    """Run ``work`` once ``session``'s transaction has committed; never if it rolls back."""
    session.info.setdefault(_PENDING, []).append(work)


@event.listens_for(Session, "after_commit")
def _run_committed(session: Session) -> None:
    session.info.pop(_MARKS, None)
    for work in session.info.pop(_PENDING, ()):
        work()


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:  # where its work starts, should it roll back alone
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back savepoint takes its own work with it (the transaction around it may still commit);
    a rolled-back transaction, all of it."""
    if previous_transaction.nested:
        mark = session.info.get(_MARKS, {}).pop(previous_transaction, None)
        if mark is not None:
            del session.info.get(_PENDING, [])[mark:]
        return
    session.info.pop(_PENDING, None)
    session.info.pop(_MARKS, None)
