"""The CLI does what the API does for tasks, cores and users, as a user runs it (the real ``orch``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from support import run_orch

from orch.config.schema import DatabaseSettings
from orch.security.passwords import verify_password
from orch.storage.engine import session_scope
from orch.storage.models import AuditRecord, User

GOOD_PASSWORD = "Correct-Horse-9-Battery"
NEW_PASSWORD = "Another-Horse-8-Staple"


def _orch(env: dict[str, str], *args: str, input: str | None = None, ok: bool = True) -> Any:
    result = run_orch(*args, input=input, env=env)
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    else:
        assert result.returncode != 0, (args, result.stdout)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def _init(database_url: str) -> dict[str, str]:
    env = {"DATABASE_URL": database_url}
    _orch(env, "db", "init")
    return env


def test_tasks_list_filters_pages_and_refuses_a_bogus_status(database_url: str) -> None:
    env = _init(database_url)
    for core in ("core-a", "core-a", "core-a", "core-b"):
        _orch(env, "dispatch", "--core", core, "--action", "noop")
    bogus = _orch(env, "tasks", "list", "--status", "bogus", ok=False)
    assert bogus.stderr.strip() == ("error: status: must be one of queued, running, completed, failed, timed_out, "
                                    "cancelled, not 'bogus'")

    first = _orch(env, "tasks", "list", "--core", "core-a", "--limit", "2").stdout.splitlines()
    assert len([line for line in first if "core-a" in line]) == 2 and "core-b" not in "\n".join(first)
    [hint] = [line for line in first if line.startswith("more: add --cursor ")]
    cursor = hint.split()[-1]
    rest = _orch(env, "tasks", "list", "--core", "core-a", "--limit", "2", "--cursor", cursor).stdout.splitlines()
    assert len([line for line in rest if "core-a" in line]) == 1 and not any(line.startswith("more:") for line in rest)
    ids = {line.split()[0] for line in first + rest if "core-a" in line}
    assert len(ids) == 3

    assert "noop" in _orch(env, "tasks", "list", "--action", "noop", "--owner", _owner(database_url)).stdout
    none = _orch(env, "tasks", "list", "--owner", "somebody-else").stdout.splitlines()
    assert none[0].startswith("queued: ")
    bad = _orch(env, "tasks", "list", "--cursor", "garbage", ok=False)
    assert bad.stderr.startswith("error: cursor: not a cursor")


def _owner(database_url: str) -> str:
    with session_scope(DatabaseSettings(url=database_url)) as session:
        return str(session.scalar(select(AuditRecord.actor).where(AuditRecord.action == "task.create").limit(1)))


def test_cores_list_isolate_and_release(database_url: str) -> None:
    env = _init(database_url)
    _orch(env, "dispatch", "--core", "core-a", "--action", "noop")
    _orch(env, "dispatch", "--core", "core-a", "--action", "noop")
    table = _orch(env, "cores", "list").stdout.splitlines()
    assert table[0].split() == ["CORE", "CONCURRENCY", "RUNNING", "QUEUED", "RESERVATION"]
    assert table[1].split() == ["core-a", "1", "0", "2", "-"]

    unknown = _orch(env, "cores", "release", "NOPE", ok=False)
    assert unknown.stderr.startswith("error: unknown core 'NOPE'") and "core-a" in unknown.stderr
    assert "was not reserved" in _orch(env, "cores", "release", "core-a").stdout

    _orch(env, "cores", "isolate", "core-a", "--reason", "bad disk")
    row = _orch(env, "cores", "list").stdout.splitlines()[1]
    assert row.split()[:6] == ["core-a", "1", "0", "2", "isolated", "by"]
    assert "released (isolated" in _orch(env, "cores", "release", "core-a").stdout
    assert _orch(env, "cores", "list").stdout.splitlines()[1].split()[-1] == "-"
    with session_scope(DatabaseSettings(url=database_url)) as session:
        actions = [(r.action, r.resource_id) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.resource == "core").order_by(AuditRecord.id))]
    assert actions == [("core.isolate", "core-a"), ("core.release", "core-a")]


def _user(database_url: str, name: str) -> User:
    with session_scope(DatabaseSettings(url=database_url)) as session:
        user = session.scalar(select(User).where(User.username == name))
        assert user is not None
        session.expunge(user)
        return user


def test_user_commands(database_url: str) -> None:
    env = _init(database_url)
    _orch(env, "user", "create", "bob", "--role", "operator", "--password-stdin", input=GOOD_PASSWORD + "\n")
    _orch(env, "user", "create-admin", "--username", "root", "--password-stdin", input=GOOD_PASSWORD + "\n")
    listed = _orch(env, "user", "list").stdout.splitlines()
    assert [line.split()[:3] for line in listed[1:]] == [["bob", "operator", "active"], ["root", "admin", "active"]]
    bad_role = _orch(env, "user", "create", "eve", "--role", "god", "--password-stdin", input=GOOD_PASSWORD + "\n",
                     ok=False)
    assert "role must be one of" in bad_role.stderr

    version = _user(database_url, "bob").token_version
    _orch(env, "user", "role", "bob", "viewer")
    _orch(env, "user", "disable", "bob")
    assert _orch(env, "user", "list").stdout.splitlines()[1].split()[:3] == ["bob", "viewer", "disabled"]
    _orch(env, "user", "enable", "bob")
    assert "unlocked" in _orch(env, "user", "unlock", "bob").stdout

    weak = _orch(env, "user", "passwd", "bob", "--password-stdin", input="short\n", ok=False)
    assert weak.stderr.startswith("error: password must contain")
    no_tty = _orch(env, "user", "passwd", "bob", input="", ok=False)
    assert "--password-stdin" in no_tty.stderr
    changed = _orch(env, "user", "passwd", "bob", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert NEW_PASSWORD not in changed.stdout + changed.stderr
    bob = _user(database_url, "bob")
    assert bob.role == "viewer" and bob.is_active and verify_password(NEW_PASSWORD, bob.password_hash)
    assert bob.token_version == version + 4  # role, disable, enable, password: each revokes older tokens
    ghost = _orch(env, "user", "role", "ghost", "admin", ok=False)
    assert ghost.stderr.strip() == "error: no user 'ghost'"

    with session_scope(DatabaseSettings(url=database_url)) as session:
        updates = [(r.actor, r.resource_id, r.details) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.action == "user.update").order_by(AuditRecord.id))]
    assert all(actor.startswith("cli:") and name == "bob" for actor, name, _ in updates)
    assert [details for _, _, details in updates] == [{"role": ["operator", "viewer"]}, {"is_active": False},
                                                      {"is_active": True}, {"password": "changed"}]
    assert NEW_PASSWORD not in json.dumps([details for _, _, details in updates])
