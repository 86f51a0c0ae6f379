"""The ``orch`` CLI as a user runs it: help, doctor, and creating the first admin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from support import free_port, run_orch

from orch.config.schema import DatabaseSettings
from orch.security.passwords import verify_password
from orch.storage.engine import session_scope
from orch.storage.models import AuditRecord, User

GOOD_PASSWORD = "Correct-Horse-9-Battery"


def test_help_imports_nothing_heavy() -> None:
    """``orch --help`` must stay fast: no Prefect, SQLAlchemy, great_expectations or cyclonedx."""
    probe = ("import sys; sys.argv = ['orch', '--help']\n"
             "from orch.cli.main import app\n"
             "try:\n    app()\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('prefect', 'sqlalchemy', 'great_expectations', 'cyclonedx', 'bandit',"
             " 'fastapi', 'alembic') if m in sys.modules]\n"
             "print('HEAVY=' + ','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Usage: orch" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


def test_the_root_lists_each_command_with_the_first_paragraph_of_its_own_help() -> None:
    """``orch --help`` lists a command from the summary registered in orch/cli/main.py, without importing its
    module; the summary must stay what the command's own help says."""
    from orch.cli.main import OrchGroup

    for name, entry in OrchGroup.subcommands.items():
        help_text = entry.load(name, None).help or ""
        assert entry.summary == " ".join(help_text.split("\n\n")[0].split()), name


def test_a_mistyped_command_gets_a_suggestion_from_the_commands_not_loaded() -> None:
    result = run_orch("taks", "list")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "Error: No such command 'taks'. Did you mean 'tasks'?"


def test_every_command_has_help() -> None:
    for args in (["up"], ["doctor"], ["config", "validate"], ["db", "init"], ["db", "migrate"],
                 ["db", "check"], ["user", "create-admin"], ["user", "unlock"]):
        result = run_orch(*args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, (args, result.stderr)


def test_version() -> None:
    result = run_orch("--version")
    assert result.returncode == 0 and result.stdout.startswith("orch-next ")


def _users(url: str) -> list[User]:
    with session_scope(DatabaseSettings(url=url)) as session:
        return list(session.scalars(select(User)))


def test_create_admin_enforces_policy_and_audits(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    assert run_orch("db", "init", env=env).returncode == 0

    weak = run_orch("user", "create-admin", "--username", "ops", "--password-stdin", input="short\n", env=env)
    assert weak.returncode == 1
    assert weak.stderr.strip() == ("error: password must contain at least 12 characters, "
                                   "an upper-case letter, a number, a symbol")
    assert _users(database_url) == []

    made = run_orch("user", "create-admin", "--username", "ops", "--password-stdin",
                    input=GOOD_PASSWORD + "\n", env=env)
    assert made.returncode == 0, made.stderr
    assert GOOD_PASSWORD not in made.stdout + made.stderr
    [user] = _users(database_url)
    assert user.username == "ops" and user.role == "admin" and user.is_active
    assert GOOD_PASSWORD not in user.password_hash and verify_password(GOOD_PASSWORD, user.password_hash)
    assert not verify_password("Wrong-Horse-9-Battery", user.password_hash)

    again = run_orch("user", "create-admin", "--username", "ops", "--password-stdin",
                     input=GOOD_PASSWORD + "\n", env=env)
    assert again.returncode == 1 and again.stderr.strip() == "error: user 'ops' already exists"

    with session_scope(DatabaseSettings(url=database_url)) as session:
        [entry] = session.scalars(select(AuditRecord)).all()
        assert (entry.action, entry.resource, entry.resource_id) == ("user.create", "user", "ops")
        assert entry.actor.startswith("cli:") and GOOD_PASSWORD not in json.dumps(entry.details)


def test_user_unlock_ends_the_waits_and_is_audited(database_url: str, isolated_env: Path) -> None:
    """Failed logins from one address make it wait; ``orch user unlock`` forgets them (audited with the
    address), and the right password works from there again at once."""
    from orch.audit import Caller
    from orch.config.loader import load_settings
    from orch.security.login import LoginFailed, LoginThrottled, authenticate

    env = {"DATABASE_URL": database_url}
    assert run_orch("db", "init", env=env).returncode == 0
    assert run_orch("user", "create-admin", "--username", "ops", "--password-stdin", input=GOOD_PASSWORD + "\n",
                    env=env).returncode == 0
    settings = load_settings(environ={**env, "ORCH_HOME": str(isolated_env),
                                      "ORCH_SECURITY__LOCKOUT__BASE_DELAY_SECONDS": "600"}, generate_secrets=False)
    attacker = Caller(ip_address="198.51.100.7")
    for _ in range(settings.security.lockout.max_failures):
        with pytest.raises(LoginFailed):
            authenticate(settings, "ops", "Wrong-Horse-9-Battery", attacker)
    with pytest.raises(LoginThrottled):
        authenticate(settings, "ops", GOOD_PASSWORD, attacker)

    result = run_orch("user", "unlock", "ops", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "user 'ops' unlocked (failures forgotten from *, 198.51.100.7)"
    assert authenticate(settings, "ops", GOOD_PASSWORD, attacker).role == "admin"
    with session_scope(DatabaseSettings(url=database_url)) as session:
        entry = session.scalars(select(AuditRecord).where(AuditRecord.action == "user.unlock")).one()
        assert (entry.resource_id, entry.details["addresses"]) == ("ops", ["*", "198.51.100.7"])
        assert entry.actor.startswith("cli:")

    unknown = run_orch("user", "unlock", "ghost", env=env)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no user 'ghost'"


def test_create_admin_without_terminal_or_input(isolated_env: Path) -> None:
    assert run_orch("db", "init").returncode == 0
    no_tty = run_orch("user", "create-admin", input="")
    assert no_tty.returncode == 1
    assert no_tty.stderr.strip() == "error: no terminal to prompt for a password (use --password-stdin)"
    empty = run_orch("user", "create-admin", "--password-stdin", input="\n")
    assert empty.returncode == 1 and empty.stderr.strip() == "error: no password on standard input"


def test_create_admin_rejects_bad_username(isolated_env: Path) -> None:
    assert run_orch("db", "init").returncode == 0
    result = run_orch("user", "create-admin", "--username", "bad name;", "--password-stdin",
                      input=GOOD_PASSWORD + "\n")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: username must be 1-64 letters, digits, '-', '_' or '.'"


def doctor(env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = run_orch("doctor", env=env)
    return result.returncode, json.loads(result.stdout)


def test_doctor_ok_with_database_and_prefect(isolated_env: Path, prefect_server: str) -> None:
    assert run_orch("db", "init").returncode == 0
    code, report = doctor({"PREFECT_API_URL": prefect_server})
    assert report["status"] == "ok", report
    assert code == 0
    assert set(report["components"]) == {"config", "database", "prefect", "disk"}
    assert report["components"]["database"]["recent_tasks"] == 0
    assert report["components"]["prefect"]["url"] == prefect_server + "/ready"


def test_doctor_degraded_without_prefect(isolated_env: Path) -> None:
    assert run_orch("db", "init").returncode == 0
    code, report = doctor({"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert code == 1 and report["status"] == "degraded"
    assert report["components"]["prefect"]["status"] == "degraded"
    assert "ConnectError" in report["components"]["prefect"]["problem"]


def test_doctor_down_without_database(isolated_env: Path) -> None:
    code, report = doctor({"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert code == 1 and report["status"] == "down"
    assert report["components"]["database"]["problem"] == "database file not found (run: orch db init)"


def test_doctor_says_when_postgresql_does_not_vacuum_orchs_tables(isolated_env: Path, pg_url: str) -> None:
    """Each claim and end of a task leaves a dead row in ``tasks``: a server that does not vacuum ORCH's tables
    lets them grow until ``orch maintenance`` runs. The server's own setting decides the first verdict (this
    machine's CI server runs with autovacuum off); a table's own ``autovacuum_enabled = false`` degrades it
    wherever it runs, naming the table, and resetting it restores the first verdict."""
    from sqlalchemy import create_engine, text

    from orch.storage.engine import normalise_url

    env = {"DATABASE_URL": pg_url, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    assert run_orch("db", "init", env=env).returncode == 0
    engine = create_engine(normalise_url(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            server_vacuums = connection.execute(text("SELECT current_setting('autovacuum') = 'on' AND "
                                                     "current_setting('track_counts') = 'on'")).scalar_one()
        _, report = doctor(env)
        database = report["components"]["database"]
        if server_vacuums:
            assert database["status"] == "ok" and "problem" not in database, database
        else:
            assert database["status"] == "degraded", database
            assert database["problem"].startswith("PostgreSQL does not vacuum ORCH's tables by itself (the server "
                                                  "runs with autovacuum = off"), database
        first = database

        with engine.connect() as connection:
            connection.execute(text("ALTER TABLE tasks SET (autovacuum_enabled = off)"))
        code, report = doctor(env)
        database = report["components"]["database"]
        assert code == 1 and database["status"] == "degraded", database
        assert "autovacuum_enabled = false on tasks)" in database["problem"]
        assert "orch maintenance" in database["problem"]

        with engine.connect() as connection:
            connection.execute(text("ALTER TABLE tasks RESET (autovacuum_enabled)"))
        _, report = doctor(env)
        assert report["components"]["database"] == first
    finally:
        engine.dispose()


def test_doctor_down_on_bad_config(isolated_env: Path) -> None:
    (isolated_env / "c.yaml").write_text("api:\n  port: 0\n")
    code, report = doctor({"ORCH_CONFIG_PATH": "c.yaml"})
    assert code == 1 and report == {"status": "down", "components": {"config": {
        "status": "down", "errors": ["api.port: must be greater than 0 (got 0)"]}}}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_without_the_schema_is_one_line_naming_what_to_run(tmp_path: Path, kind: str,
                                                                      request: pytest.FixtureRequest) -> None:
    """A new ORCH_HOME before `orch up` (or `orch db init`): every command that reads the database ended in
    a traceback of the SQL it sent ("no such table: users"). Now one line says the database is not
    initialised and what to run, and after it the command works."""
    url = f"sqlite:///{tmp_path / 'data' / 'orch.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    env = {"ORCH_HOME": str(tmp_path), "DATABASE_URL": url}
    for command in (["tasks", "list"], ["user", "list"], ["cores", "list"]):
        done = run_orch(*command, env=env)
        assert done.returncode == 1, done.stdout
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.rstrip().endswith(
            "is not initialised (run: orch db init; orch up does it when it starts)"), done.stderr
    made = run_orch("user", "create-admin", "--username", "first", "--password-stdin", env=env,
                    input="First-Admin-Pass-42!\n")
    assert made.returncode == 1 and "is not initialised" in made.stderr and made.stderr.count("\n") == 1
    assert run_orch("db", "init", env=env).returncode == 0
    made = run_orch("user", "create-admin", "--username", "first", "--password-stdin", env=env,
                    input="First-Admin-Pass-42!\n")
    assert made.returncode == 0, made.stderr


def test_a_schema_behind_this_code_is_one_line_naming_the_migration(tmp_path: Path) -> None:
    """Code upgraded, database not migrated yet: the missing table of the newer revision is named as
    the schema being behind, with the command that brings it forward."""
    from alembic import command

    from orch.storage.engine import get_engine
    from orch.storage.migrate import _alembic_config, head_revision

    url = f"sqlite:///{tmp_path / 'orch.db'}"
    with get_engine(DatabaseSettings(url=url)).begin() as connection:
        command.upgrade(_alembic_config(connection), "0010")
    env = {"ORCH_HOME": str(tmp_path), "DATABASE_URL": url}
    done = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.rstrip().endswith(f"is at schema 0010, this ORCH needs {head_revision()} "
                                         "(run: orch db migrate)"), done.stderr
    assert run_orch("db", "migrate", env=env).returncode == 0
    assert run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", env=env).returncode == 0
