"""What ``orch up`` says once the stack is ready, for someone starting it the first time: where the console
is, how to create the first admin when there is none, and how to point Prefect's CLI at this server.

The Prefect auth string is never printed: the line says where to read it from. Whether an admin exists is
asked in a short-lived child (``python -m orch.stack.first_run``, the database settings on its stdin), as
``orch up`` runs ``orch db init``: the supervisor lives for hours and keeps SQLAlchemy out of its memory.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orch.config.local_secrets import PREFECT_AUTH_KEY, SECRETS_FILE

if TYPE_CHECKING:
    from orch.config.schema import DatabaseSettings, Settings

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # listening everywhere: a browser on this host uses loopback


def first_run_lines(settings: Settings) -> list[str]:
    """The lines to print under "ORCH-Next is up" (indented like the others)."""
    lines = [f"  Console:      {console_url(settings)}"]
    admin = admin_exists(settings.database)
    if admin is None:
        lines.append("  First admin:  if there is none yet: orch user create-admin --username admin "
                     "(asks for the password)")
    elif not admin:
        lines.append("  First admin:  there is none yet: orch user create-admin --username admin "
                     "(asks for the password)")
    lines.append(f"  Prefect CLI:  {prefect_exports(settings)}   (then: prefect deployment run <flow>/<deployment>)")
    return lines


def console_url(settings: Settings) -> str:
    scheme = "https" if settings.api.tls_cert_file else "http"
    host = "127.0.0.1" if settings.api.host in WILDCARD_HOSTS else settings.api.host
    return f"{scheme}://{host}:{settings.api.port}/ui/"


def prefect_exports(settings: Settings) -> str:
    """``export PREFECT_API_URL=… PREFECT_API_AUTH_STRING=…`` with a command that reads the string, never
    the string itself."""
    export = f"export PREFECT_API_URL={shlex.quote(settings.prefect.resolved_api_url())}"
    if settings.prefect.auth_string is None:
        return export
    secrets = Path(settings.data_dir).resolve() / SECRETS_FILE
    if _generated(settings, secrets):
        read = (f"{shlex.quote(sys.executable)} -c "
                f"{shlex.quote(f'import json, sys; print(json.load(open(sys.argv[1]))[{PREFECT_AUTH_KEY!r}])')} "
                f"{shlex.quote(str(secrets))}")
        return f'{export} PREFECT_API_AUTH_STRING="$({read})"'
    return f"{export} PREFECT_API_AUTH_STRING=<the prefect.auth_string you configured>"


def _generated(settings: Settings, secrets: Path) -> bool:
    """Whether the auth string in use is the one ``orch up`` generated into ``data/secrets.json``."""
    import json

    try:
        stored = json.loads(secrets.read_text(encoding="utf-8")).get(PREFECT_AUTH_KEY)
    except (OSError, ValueError, AttributeError):
        return False
    auth = settings.prefect.auth_string
    return auth is not None and stored == auth.get_secret_value()


def admin_exists(database: DatabaseSettings) -> bool | None:
    """Whether an active admin user exists; None when the database could not say."""
    try:
        result = subprocess.run([sys.executable, "-m", "orch.stack.first_run"], input=database.model_dump_json(),
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = result.stdout.strip()
    return {"admin": True, "no admin": False}.get(answer) if result.returncode == 0 else None


def _main() -> int:
    from sqlalchemy import select

    from orch.config.schema import DatabaseSettings
    from orch.storage.engine import session_scope
    from orch.storage.models import User

    database = DatabaseSettings.model_validate_json(sys.stdin.read())
    with session_scope(database) as session:
        found = session.scalar(select(User.username).where(User.role == "admin", User.is_active.is_(True)).limit(1))
    print("admin" if found else "no admin")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
