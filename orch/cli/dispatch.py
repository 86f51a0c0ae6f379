"""``orch dispatch``: queue a task for a core from a shell, and optionally wait for its end."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from orch.cli.common import ConfigOption, cli_owner, fail, load, os_user, print_json


def _parse_params(pairs: list[str], as_json: str | None) -> dict[str, Any]:
    """``k=v`` pairs (v read as JSON when it parses, else as a string) over ``--params-json``."""
    params: dict[str, Any] = {}
    if as_json:
        try:
            loaded = json.loads(as_json)
        except json.JSONDecodeError as exc:
            fail(f"--params-json is not JSON: {exc.msg} at column {exc.colno}")
        if not isinstance(loaded, dict):
            fail("--params-json must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r} must look like key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def dispatch_task(
    core: Annotated[str, typer.Option("--core", help="The core to run on, e.g. WORK_AI_01.")],
    action: Annotated[str, typer.Option(help="noop, sleep, shell, http, run-deployment, external or a plugin.")],
    priority: Annotated[str, typer.Option(help="critical, high, normal, low (or 3-0).")] = "normal",
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", help="key=value (value as JSON if it parses); repeatable.")] = None,
    params_json: Annotated[Optional[str], typer.Option("--params-json", help="All params as a JSON object.")] = None,
    timeout: Annotated[Optional[int], typer.Option(help="Seconds (default features.task_timeout_default).")] = None,
    max_retries: Annotated[Optional[int], typer.Option(help="Retries after the first attempt.")] = None,
    lock: Annotated[Optional[list[str]], typer.Option(
        "--lock", help="A resource lock the task needs; repeatable.")] = None,
    stay: Annotated[bool, typer.Option("--stay", help="Keep the core reserved for you after the task ends.")] = False,
    idempotency_key: Annotated[Optional[str], typer.Option(
        help="Dispatching the same key again returns the same task.")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Metadata tag; repeatable.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final state; exit 1 unless completed.")] = False,
    config: ConfigOption = None,
) -> None:
    """Queue a task for a core and print it (with --wait, its final state).

    Acts as the local administrator: the task's owner is ``cli:<login>``, which holds the admin role when
    the task is dispatched and when it runs (whoever can run this on the host can read the database and
    its secrets anyway), so a ``run-deployment`` of restore is allowed here and refused to an API operator.
    """
    settings = load(config)
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.request import authorize, validate
    from orch.security.flow_access import role_of_owner

    body: dict[str, Any] = {
        "core_id": core, "action": action, "priority": priority, "params": _parse_params(param or [], params_json),
        "timeout": timeout, "max_retries": max_retries, "locks": lock or [], "stay": stay,
        "idempotency_key": idempotency_key, "metadata": {"source": "cli", "user_id": os_user(), "tags": tag or []}}
    queue = TaskQueue(settings)
    valid, owner = validate(body, settings), cli_owner()
    authorize(valid, owner, role_of_owner(settings.database, owner))  # the same rule as at run time
    task, created = queue.enqueue(valid, owner)
    if not wait:
        print_json({**task, "created": created})
        return
    final = _wait_for(queue, task["task_id"], task["timeout"] * (task["max_retries"] + 1) + 60)
    print_json(final)
    raise typer.Exit(0 if final["status"] == "completed" else 1)


def _wait_for(queue: Any, task_id: str, limit: float) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + limit
    delay = 0.05
    while True:
        task: dict[str, Any] = queue.get(task_id)
        if task["status"] in ("completed", "failed", "timed_out", "cancelled"):
            return task
        if time.monotonic() > deadline:
            fail(f"task {task_id} still {task['status']} after {limit:.0f} s (is a dispatcher running? orch up)")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
