"""The ``orch`` command line.

Every command imports what it needs inside its body, so ``orch --help`` stays well under a second.
Errors a user can cause end in one line on stderr naming the cause, and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, Optional

import typer

from orch import __version__

app = typer.Typer(name="orch", help="ORCH-Next: operations orchestrator on Prefect.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
db_app = typer.Typer(help="Create, upgrade and check the ORCH database.", no_args_is_help=True)
user_app = typer.Typer(help="Manage API users.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")

ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="Config YAML (default: $ORCH_CONFIG_PATH, else built-in defaults).",
    show_default=False)]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line and exit 1; anything else is a real bug."""
    from orch.errors import OrchError

    try:
        yield
    except OrchError as exc:
        fail(str(exc))


def load(config: str | None, *, generate_secrets: bool = True) -> Any:
    from orch.config.loader import load_settings

    from orch.logging_config import configure_process_logging

    settings = load_settings(config, generate_secrets=generate_secrets)
    configure_process_logging(settings, write_file=False)
    return settings


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
        settings = load(config)
        from orch.stack.up import run_stack

        code = run_stack(settings, config or os.environ.get("ORCH_CONFIG_PATH"),
                         say=lambda line: typer.echo(line))
    raise typer.Exit(code)


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
    """Create the database (and the PostgreSQL database itself if missing) at the current schema."""
    with user_errors():
        settings = load(config)
        from orch.storage.migrate import upgrade

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


@user_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="Login name of the new admin.")] = "admin",
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="Read the password from standard input.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create an admin user; the password must meet security.password_policy."""
    with user_errors():
        settings = load(config)
        password = _read_password(password_stdin)
        from orch.security.users import create_user
        from orch.storage.engine import session_scope

        with session_scope(settings.database) as session:
            create_user(session, username=username, password=password, role="admin",
                        policy=settings.security.password_policy, actor=f"cli:{_os_user()}")
        typer.echo(f"admin user {username!r} created")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input")
        return password
    if not sys.stdin.isatty():
        fail("no terminal to prompt for a password (use --password-stdin)")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
