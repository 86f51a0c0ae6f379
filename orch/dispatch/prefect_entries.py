"""Dropping what Prefect keeps per task run of the long-lived ``dispatch`` flow run (issue 17).

Prefect keeps three things for every task run submitted in a flow run, until that flow run ends: the task
runner's cancel event for it (``ThreadPoolTaskRunner._cancel_events``, set only when the flow run is
cancelled as a whole), the assets it passes downstream (``FlowRunContext.task_run_assets``, empty for ORCH's
tasks) and links from its result objects to its final state (``FlowRunContext.run_results``). A flow made of
a few tasks never notices; the dispatcher's flow run lasts an hour and submits up to a hundred task runs a
second: measured, about 3 KB a task, over 1 GB an hour. So the dispatcher drops them once a task run is final.

The names are Prefect's internals, checked by tests/test_prefect_contract.py so an upgrade that renames one
fails there, naming it; tests/test_dispatch_memory.py counts the entries a dispatch run keeps.
"""

from __future__ import annotations

from uuid import UUID


def forget_task_run(task_run_id: UUID) -> None:
    """Drop what the current flow run keeps for the final task run ``task_run_id``; called in the flow run's
    thread (the dispatcher loop), after the task run's thread is done with them.

    ``run_results`` is keyed by the ``id()`` of result objects, not by task run, and serves one purpose: to
    record, when one task's result is passed to another task, that the second depends on the first. No
    dispatch task is ever given another's result, so every link there is dead once written: all of them go.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:  # not inside a flow run: Prefect keeps nothing
        return
    context.task_runner._cancel_events.pop(task_run_id, None)  # type: ignore[attr-defined]
    context.task_run_assets.pop(task_run_id, None)
    context.run_results.clear()
