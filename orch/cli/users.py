"""``orch user``: the API's users, managed on the host (the CLI side of ``/users``).

The CLI acts as the local administrator (actor ``cli:<login>``) and every change goes through the same
functions as the API's, so it is checked, revokes tokens and is audited the same way. Passwords are read
from a prompt (asked twice) or with ``--password-stdin``, never from the command line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orch.cli.common import ConfigOption, cli_owner, fail, load, read_password

user_app = typer.Typer(help="Manage API users.", no_args_is_help=True)
Username = Annotated[str, typer.Argument(help="The user's login name.")]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]


@user_app.command("list")
def user_list(config: ConfigOption = None) -> None:
    """Every user with role, state and last login."""
    settings = load(config)
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import User

    with session_scope(settings.database) as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        typer.echo(f"{'USER':<24}  {'ROLE':<8}  {'STATE':<8}  LAST LOGIN")
        for user in users:
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
            typer.echo(f"{user.username:<24}  {user.role:<8}  "
                       f"{'active' if user.is_active else 'disabled':<8}  {last}")


def _create(username: str, role: str, password_stdin: bool, config: str | None) -> None:
    settings = load(config)
    password = read_password(password_stdin)
    from orch.security.users import create_user
    from orch.storage.engine import session_scope

    with session_scope(settings.database, write_lock=True) as session:
        create_user(session, username=username, password=password, role=role,
                    policy=settings.security.password_policy, actor=cli_owner())
    typer.echo(f"{role} user {username!r} created")


@user_app.command("create")
def user_create(username: Username,
                role: Annotated[str, typer.Option("--role", help="admin, operator, viewer or system.")],
                password_stdin: PasswordStdin = False, config: ConfigOption = None) -> None:
    """Create a user; the password must meet security.password_policy."""
    _create(username, role, password_stdin, config)


@user_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="Login name of the new admin.")] = "admin",
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Create an admin user; the password must meet security.password_policy."""
    _create(username, "admin", password_stdin, config)


def _update(username: str, config: str | None, done: str, **changes: Any) -> None:
    settings = load(config)
    if changes.pop("ask_password", False):
        changes["password"] = read_password(changes.pop("password_stdin"), f"New password for {username}")
    from orch.security.user_changes import update_user
    from orch.storage.engine import session_scope

    with session_scope(settings.database, write_lock=True) as session:
        update_user(session, username, actor=cli_owner(), policy=settings.security.password_policy, **changes)
    typer.echo(f"user {username!r} {done}")


@user_app.command("role")
def user_role(username: Username,
              role: Annotated[str, typer.Argument(help="admin, operator, viewer or system.")],
              config: ConfigOption = None) -> None:
    """Give USERNAME another role (their tokens stop working)."""
    _update(username, config, f"now has role {role}", role=role)


@user_app.command("disable")
def user_disable(username: Username, config: ConfigOption = None) -> None:
    """Refuse USERNAME's logins and tokens until enabled again."""
    _update(username, config, "disabled", is_active=False)


@user_app.command("enable")
def user_enable(username: Username, config: ConfigOption = None) -> None:
    """Let a disabled USERNAME log in again."""
    _update(username, config, "enabled", is_active=True)


@user_app.command("passwd")
def user_passwd(username: Username, password_stdin: PasswordStdin = False, config: ConfigOption = None) -> None:
    """Set USERNAME's password (prompted twice, or --password-stdin); their tokens stop working."""
    _update(username, config, "password changed", ask_password=True, password_stdin=password_stdin)


@user_app.command("unlock")
def user_unlock(username: Annotated[str, typer.Argument(help="The user whose failed logins to forget.")],
                config: ConfigOption = None) -> None:
    """End the waits failed logins imposed on USERNAME, from every address; audited."""
    settings = load(config)
    from sqlalchemy import select

    from orch.security.login import unlock
    from orch.storage.engine import session_scope
    from orch.storage.models import User

    with session_scope(settings.database, write_lock=True) as session:
        if session.scalar(select(User.id).where(User.username == username)) is None:
            fail(f"no user {username!r}")
        addresses = unlock(session, username, actor=cli_owner())
    typer.echo(f"user {username!r} unlocked" + (f" (failures forgotten from {', '.join(addresses)})"
                                                 if addresses else " (no failures were counted)"))
