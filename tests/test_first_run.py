"""What ``orch up`` prints once the stack is ready: the console, the first admin, the Prefect CLI exports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pydantic import SecretStr

from orch.config.schema import Settings
from orch.security.users import create_user
from orch.stack.first_run import first_run_lines
from orch.storage.engine import session_scope

AUTH = "orch:first-run-auth-string-0123456789"


def test_the_create_admin_line_until_there_is_an_admin(settings: Settings) -> None:
    lines = first_run_lines(settings)
    assert lines[0] == "  Console:      http://127.0.0.1:8000/ui/"
    assert any("orch user create-admin" in line and "none yet" in line for line in lines)
    with session_scope(settings.database, write_lock=True) as session:
        create_user(session, username="boss", password="Sup3r-Secret-Pw!", role="admin",
                    policy=settings.security.password_policy, actor="test")
    assert not any("create-admin" in line for line in first_run_lines(settings))


def test_prefect_exports_say_where_the_auth_string_is_never_what_it_is(settings: Settings) -> None:
    settings.api.host, settings.api.port = "0.0.0.0", 8123
    assert first_run_lines(settings)[0] == "  Console:      http://127.0.0.1:8123/ui/"
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api " in first_run_lines(settings)[-1]

    settings.prefect.auth_string = SecretStr(AUTH)
    configured = first_run_lines(settings)[-1]
    assert "PREFECT_API_AUTH_STRING=<the prefect.auth_string you configured>" in configured

    secrets = Path(settings.data_dir).resolve() / "secrets.json"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text(json.dumps({"prefect_auth_string": AUTH}), encoding="utf-8")
    generated = first_run_lines(settings)[-1]
    assert str(secrets) in generated and 'PREFECT_API_AUTH_STRING="$(' in generated
    assert not any(AUTH in line for line in first_run_lines(settings))
    exports = generated.split("Prefect CLI:")[1].split("   (then:")[0].strip()
    shown = subprocess.run(["bash", "-c", f"{exports}; echo \"$PREFECT_API_AUTH_STRING\""],
                           capture_output=True, text=True, timeout=30)
    assert shown.stdout.strip() == AUTH, shown.stderr  # the command it shows does read the string


def test_a_database_that_cannot_answer_gets_the_hedged_line(settings: Settings) -> None:
    settings.database.url = f"sqlite:///{Path(settings.data_dir).resolve() / 'missing' / 'nothing.db'}"
    lines = first_run_lines(settings)
    assert any(line.startswith("  First admin:  if there is none yet: orch user create-admin") for line in lines)
