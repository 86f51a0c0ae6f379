"""Issue 17: the worker grew about 3 KB per ORCH task, because Prefect keeps an entry per task run for as long
as its flow run lasts, and the ``dispatch`` flow run lasts an hour (100 tasks/s: over 1 GB an hour).

Counted in entries, not bytes: what Prefect holds for the real ``dispatch`` flow run once its tasks are done,
read by an ``on_completion`` hook (Prefect runs it inside the flow run's context, before the context ends).
"""

from __future__ import annotations

from typing import Any

import pytest

from orch.config.runtime import get_settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.migrate import upgrade

CONCURRENCY = 8


@pytest.fixture
def queue(prefect_server: str, isolated_env: Any, monkeypatch: pytest.MonkeyPatch) -> TaskQueue:
    """SQLite only: what is counted is Prefect's, the same whatever database holds ORCH's queue."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{isolated_env / 'data' / 'orch.db'}")
    monkeypatch.setenv("ORCH_DISPATCH__CORE_CONCURRENCY", str(CONCURRENCY))
    settings = get_settings()
    upgrade(settings.database, create_database=True)
    return TaskQueue(settings)


def held_per_task_run() -> dict[str, int]:
    """What the current flow run keeps per task run it submitted (tests/test_prefect_contract.py checks names).

    Of ``run_results`` only the task runs' entries: the flow run's own result is linked there as it completes.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    assert context is not None, "not inside a flow run"
    return {"cancel events": len(context.task_runner._cancel_events),  # type: ignore[attr-defined]
            "run results": sum(1 for state, *_ in context.run_results.values() if state.state_details.task_run_id),
            "task run assets": len(context.task_run_assets)}


def test_a_dispatch_run_keeps_nothing_per_finished_task(queue: TaskQueue) -> None:
    from flows.dispatch import dispatch

    seen: list[dict[str, int]] = []
    counted = dispatch.with_options(on_completion=[lambda _flow, _run, _state: seen.append(held_per_task_run())])
    for tasks in (10, 60):
        for _ in range(tasks):
            queue.enqueue(validate({"core_id": "WORK_AI_01", "action": "noop"}, queue.settings), "tester")
        summary = counted(run_for_seconds=0, concurrency=CONCURRENCY)
        assert (summary["claimed"], summary["finished"]) == (tasks, tasks)
    assert len(seen) == 2, "the on_completion hook did not run for both dispatch runs"
    after_10, after_60 = seen
    assert after_60 == after_10, f"Prefect's per-task-run entries grow with the tasks run: {after_10} -> {after_60}"
    assert all(count < CONCURRENCY for count in after_60.values()), after_60
