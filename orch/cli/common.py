"""What every ``orch`` command module shares: the ``--config`` option, the one-line error exit, the
settings loader for commands, and who the CLI acts as in the audit trail.

Kept apart from ``orch.cli.main``, the root, which imports no command module (each loads when one of its
commands runs), so that the command modules never import the root and ``orch --help`` loads none of this.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn, Optional

import typer

ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="Config YAML (default: $ORCH_CONFIG_PATH, else built-in defaults).",
    show_default=False)]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr, ``error: <message>``; ``orch`` does the same for every
    error a user can cause (an ``OrchError``) that a command lets through."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


_LOADED: list[Any] = []  # the settings this command loaded: what the error handler asks the database about


def load(config: str | None, *, generate_secrets: bool = True) -> Any:
    from orch.audit import configure_audit_log
    from orch.config.loader import load_settings
    from orch.logging_config import configure_process_logging

    settings = load_settings(config, generate_secrets=generate_secrets)
    configure_process_logging(settings, write_file=False, quiet=True)
    configure_audit_log(settings.logging.audit_file)  # what the CLI changes is audited to the file too
    _LOADED[:] = [settings]
    return settings


def schema_problem(error: BaseException) -> str | None:
    """When a database error met by a command comes from a schema this code does not expect (a new
    ORCH_HOME before ``orch up`` or ``orch db init``, or an upgrade whose migration has not run), the one
    line that says so and what to run; None for any other error. Every command met a missing table as a
    traceback of the SQL it sent."""
    database_errors = sys.modules.get("sqlalchemy.exc")
    if database_errors is None or not isinstance(error, database_errors.SQLAlchemyError) or not _LOADED:
        return None
    from orch.errors import OrchError
    from orch.storage.engine import safe_url
    from orch.storage.migrate import current_revision, head_revision

    database = _LOADED[0].database
    try:
        revision = current_revision(database)
    except OrchError as unreachable:
        return str(unreachable)
    where = safe_url(database.url or "")
    if revision is None:
        return f"{where} is not initialised (run: orch db init; orch up does it when it starts)"
    if revision != head_revision():
        return f"{where} is at schema {revision}, this ORCH needs {head_revision()} (run: orch db migrate)"
    return None


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    """A password from one line of standard input, else from a prompt asked twice; never from argv,
    where other local users could read it in the process list."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input")
        return password
    if not sys.stdin.isatty():
        fail("no terminal to prompt for a password (use --password-stdin)")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


def cli_owner() -> str:
    """The owner and audit actor of what a CLI user does: ``cli:<login name>``."""
    return f"cli:{os_user()}"


def os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"
