"""``orch tasks``: list, show, cancel and re-queue dispatched tasks (the CLI side of ``/tasks``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from orch.cli.common import ConfigOption, cli_owner, fail, load, print_json

tasks_app = typer.Typer(help="Inspect and manage dispatched tasks.", no_args_is_help=True)


@tasks_app.command("list")
def tasks_list(
    status: Annotated[Optional[str], typer.Option(
        help="queued, running, completed, failed, timed_out, cancelled.")] = None,
    core: Annotated[Optional[str], typer.Option("--core", help="Only this core's tasks.")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="Only tasks of this action.")] = None,
    owner: Annotated[Optional[str], typer.Option("--owner", help="Only tasks of this owner (e.g. cli:ops).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[Optional[str], typer.Option("--cursor", help="Continue after the page that printed it.")] = None,
    config: ConfigOption = None,
) -> None:
    """Newest tasks first, one line each; the cursor of the next page when there is one, and the queue
    depth by priority at the end."""
    from orch.dispatch.errors import InvalidRequest
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.task_filter import TaskFilter

    queue = TaskQueue(load(config))
    try:
        tasks, next_cursor = queue.page(TaskFilter(status=status, core_id=core, action=action, owner=owner),
                                        limit, cursor)
    except InvalidRequest as exc:
        fail("; ".join(exc.errors))
    for task in tasks:
        typer.echo(f"{task['task_id']}  {task['status']:<9}  {task['priority']:<8}  {task['core_id']:<14}  "
                   f"{task['action']:<14}  {task['created_at']}")
    if next_cursor:
        typer.echo(f"more: add --cursor {next_cursor}")
    typer.echo("queued: " + ", ".join(f"{name} {count}" for name, count in queue.depth().items()))


@tasks_app.command("show")
def tasks_show(task_id: str, config: ConfigOption = None) -> None:
    """A task and its events as JSON."""
    from orch.dispatch.queue import TaskQueue

    queue = TaskQueue(load(config))
    print_json({**queue.get(task_id), "events": queue.events(task_id)})


@tasks_app.command("cancel")
def tasks_cancel(task_id: str, config: ConfigOption = None) -> None:
    """Cancel a queued or running task."""
    from orch.dispatch.queue import TaskQueue

    task = TaskQueue(load(config)).cancel(task_id, cli_owner())
    typer.echo(f"task {task['task_id']} cancelled")


@tasks_app.command("reset-failed")
def tasks_reset_failed(
    task_ids: Annotated[Optional[list[str]], typer.Argument(
        help="Only these tasks (default: every failed one).")] = None,
    config: ConfigOption = None,
) -> None:
    """Put failed and timed-out tasks back in the queue with fresh attempts."""
    from orch.dispatch.queue import TaskQueue

    reset = TaskQueue(load(config)).reset_failed(cli_owner(), task_ids or None)
    typer.echo(f"re-queued {len(reset)} task(s)" + ("".join(f"\n  {t}" for t in reset)))
