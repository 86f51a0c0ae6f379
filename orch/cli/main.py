"""The ``orch`` command line.

Every command imports what it needs inside its body, so ``orch --help`` stays well under a second.
Errors a user can cause end in one line on stderr naming the cause, and a non-zero exit.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Optional

import typer

from orch import __version__
from orch.cli.analysis import logs_app, perf_app
from orch.cli.backup import backup_app, db_maintain, recover_app
from orch.cli.common import ConfigOption, cli_owner, fail, load, os_user, print_json, user_errors
from orch.cli.cores import cores_app
from orch.cli.monitoring import register as register_monitoring
from orch.cli.supply_chain import sbom_app, scan
from orch.cli.tasks import tasks_app
from orch.cli.users import user_app

app = typer.Typer(name="orch", help="ORCH-Next: operations orchestrator on Prefect.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
db_app = typer.Typer(help="Create, upgrade and check the ORCH database.", no_args_is_help=True)
locks_app = typer.Typer(help="Inspect and release resource locks.", no_args_is_help=True)
app.add_typer(locks_app, name="locks")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

# Command groups kept in their own modules.
app.add_typer(tasks_app, name="tasks")
app.add_typer(cores_app, name="cores")
app.add_typer(user_app, name="user")
app.add_typer(logs_app, name="logs")
app.add_typer(perf_app, name="perf")
app.add_typer(backup_app, name="backup")
app.add_typer(recover_app, name="recover")
db_app.command("maintain")(db_maintain)
app.add_typer(sbom_app, name="sbom")
app.command("scan")(scan)
register_monitoring(app)  # orch alerts | silence | maintenance | monitor


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch-next {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """ORCH-Next: task dispatch to worker cores, monitoring, self-healing and backups on Prefect."""


@app.command()
def up(config: ConfigOption = None) -> None:
    """Run the whole local stack: Prefect server, worker, deployments and the ORCH API."""
    with user_errors():
        # Not load(): it opens the audit log, whose module imports SQLAlchemy; `orch up` audits nothing,
        # and this process becomes the stack's supervisor (orch.stack.up), which must stay small.
        from orch.config.loader import load_settings
        from orch.logging_config import configure_process_logging
        from orch.stack.up import run_stack

        settings = load_settings(config)
        configure_process_logging(settings, write_file=False, quiet=True)
        run_stack(settings, config or os.environ.get("ORCH_CONFIG_PATH"))


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Print a JSON health verdict (config, database, Prefect, disk); exit 0 only when ok."""
    from orch.doctor import run_doctor

    report = run_doctor(config)
    typer.echo(json.dumps(report, indent=2, default=str))
    raise typer.Exit(0 if report["status"] == "ok" else 1)


@config_app.command("validate")
def config_validate(path: Annotated[Optional[str], typer.Argument(
        help="YAML file to check (default: $ORCH_CONFIG_PATH, else the built-in defaults).")] = None) -> None:
    """Exit 0 when the configuration is valid, else 1 listing every error with its key path."""
    from orch.config.loader import ConfigError, load_settings

    try:
        settings = load_settings(path, generate_secrets=False)
    except ConfigError as exc:
        source = exc.source or "configuration"
        typer.echo(f"{source}: {len(exc.errors)} error(s)", err=True)
        for line in exc.errors:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path or os.environ.get('ORCH_CONFIG_PATH') or 'defaults'}: valid "
               f"({settings.environment}, database {_safe(settings.database.url)})")


def _safe(url: str) -> str:
    from orch.storage.engine import safe_url

    return safe_url(url)


@db_app.command("init")
def db_init(config: ConfigOption = None) -> None:
    """Create the database (and the PostgreSQL database itself if missing) at the current schema.

    An existing SQLite file is checked first (``PRAGMA quick_check``): ``orch up`` runs this before it
    serves anything, and a damaged file must stop it there, before new work is accepted into it."""
    with user_errors():
        settings = load(config)
        from orch.storage.engine import DatabaseCorrupt
        from orch.storage.health import check_corruption
        from orch.storage.migrate import upgrade

        problem = check_corruption(settings.database, "orch db init")
        if problem is not None:
            raise DatabaseCorrupt(settings.database.url or "", problem)
        result = upgrade(settings.database, create_database=True)
        state = "created" if result.before is None else (
            "upgraded from " + result.before if result.changed else "already initialised")
        typer.echo(f"{_safe(settings.database.url)}: {state} at schema {result.after}")


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Upgrade the database schema to the version this code expects."""
    with user_errors():
        settings = load(config)
        from orch.storage.migrate import current_revision, upgrade

        if current_revision(settings.database) is None:
            fail(f"{_safe(settings.database.url)} is not initialised (run: orch db init)")
        result = upgrade(settings.database)
        typer.echo(f"{_safe(settings.database.url)}: "
                   + (f"migrated {result.before} -> {result.after}" if result.changed
                      else f"already at {result.after}"))


@db_app.command("check")
def db_check(config: ConfigOption = None) -> None:
    """Integrity check, schema revision and tasks created in the last hour; exit 1 when unhealthy."""
    with user_errors():
        settings = load(config)
        from orch.storage.health import check_database

        health = check_database(settings.database)
        if not health.healthy:
            fail(health.summary())
        typer.echo(health.summary())


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


@app.command("dispatch")
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
    with user_errors():
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


@locks_app.command("list")
def locks_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
               config: ConfigOption = None) -> None:
    """Held locks, who waits for them, and wait statistics."""
    with user_errors():
        from orch.dispatch.locks import LockManager

        entries = LockManager(load(config)).list()
        if as_json:
            print_json(entries)
            return
        for entry in entries:
            held = entry["held"]
            stats = entry["stats"]
            typer.echo(f"{entry['resource']}: " + (f"held by {held['owner']} until {held['expires_at']}" if held
                                                    else "free")
                       + f"; {len(entry['waiting'])} waiting; {stats['acquisitions']} acquisitions, "
                       f"avg wait {stats['avg_wait_seconds']} s, max {stats['max_wait_seconds']} s, "
                       f"{stats['timeouts']} timeouts, {stats['expirations']} expired")
        if not entries:
            typer.echo("no locks")


@locks_app.command("release")
def locks_release(resource: str, config: ConfigOption = None) -> None:
    """Force-release a lock whatever holds it (for an operator clearing a stuck holder)."""
    with user_errors():
        from orch.dispatch.locks import LockManager

        released = LockManager(load(config)).release(resource, actor=cli_owner())
        typer.echo(f"lock {resource} released" if released else f"lock {resource} was not held")


@locks_app.command("cleanup")
def locks_cleanup(config: ConfigOption = None) -> None:
    """Drop locks past their TTL and waiters that stopped waiting (the guide's cleanup_expired_locks)."""
    with user_errors():
        from orch.dispatch.locks import LockManager

        typer.echo(f"removed {LockManager(load(config)).cleanup_expired()} expired lock(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
