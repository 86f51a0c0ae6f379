"""Recovery that guides the operator (issue 15 item 6), on real SQLite files, the real ``orch`` CLI in
real processes (a real pseudo-terminal for the confirmation) and the real API app.

``restore latest`` falls back past a corrupt newest backup and says so; ``backup list`` shows each entry's
verification; a restore asks before it replaces anything; ``orch recover --dry-run`` prints the plan and
changes nothing; every task creation, API or CLI, is one audit entry that ``tasks-from-logs`` rebuilds
with its params (masked values stay masked).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import Api
from sqlalchemy import func, update
from sqlalchemy import select as sql_select
from support import BIN, run_orch
from test_recovery import corrupt

from orch.backup.catalog import Catalog
from orch.backup.create import create_backup
from orch.backup.files import BackupError, BackupVerificationFailed, backup_dir
from orch.backup.restore import restore_backup
from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.redaction import MASK
from orch.storage.engine import dispose_engines, session_scope
from orch.storage.models import ResourceLock, Task, TaskEvent
from orch.storage.types import utcnow


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    loaded = load_settings(environ={"ORCH_HOME": str(isolated_env)}, generate_secrets=False)
    upgrade(loaded.database, create_database=True)
    return loaded


def put(settings: Settings, n: int) -> list[str]:
    batch = [validate({"core_id": "WORK_AI_01", "action": "noop"}, settings) for _ in range(n)]
    return [task["task_id"] for task, _ in TaskQueue(settings).enqueue_many(batch, "tester")]


def task_count(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(sql_select(func.count()).select_from(Task)))


def flip_a_byte(path: Path) -> None:
    """Damage a backup in place, as bit rot on the backup disk would (same size, other bytes)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def two_backups_newest_corrupt(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    put(settings, 3)
    older = create_backup(settings, "manual")
    put(settings, 2)
    newest = create_backup(settings, "manual")
    put(settings, 1)
    flip_a_byte(backup_dir(settings) / newest["file"])
    return older, newest


def test_restore_latest_skips_a_corrupt_newest_backup_and_says_why(settings: Settings) -> None:
    older, newest = two_backups_newest_corrupt(settings)
    with pytest.raises(BackupVerificationFailed, match="does not match its catalog checksum"):
        restore_backup(settings, newest["file"])  # named: still refused
    assert task_count(settings) == 6

    report = restore_backup(settings, "latest")
    assert report["restored"] == older["file"] and task_count(settings) == 3
    [skipped] = report["skipped"]
    assert skipped == (f"skipped {newest['file']}: {newest['file']} does not match its catalog checksum "
                       "(corrupt or altered); refusing it")
    assert report["steps"][0] == skipped  # the first thing the operator reads

    by_name = {entry["file"]: entry for entry in Catalog(backup_dir(settings)).entries()}
    assert by_name[newest["file"]]["verified"] is False
    assert "catalog checksum" in by_name[newest["file"]]["verification_failed"]["reason"]
    assert by_name[older["file"]]["verified"] is True
    assert Catalog(backup_dir(settings)).newest_verified("sqlite")["file"] == older["file"]


def test_restore_latest_skips_a_newest_backup_whose_copy_fails_its_check(settings: Settings) -> None:
    """A newest backup that was never found corrupt before is checked, found corrupt, recorded, skipped."""
    put(settings, 2)
    older = create_backup(settings, "manual")
    put(settings, 2)
    newest = create_backup(settings, "manual")
    flip_a_byte(backup_dir(settings) / newest["file"])
    report = restore_backup(settings, "latest")
    assert report["restored"] == older["file"]
    assert report["skipped"] == [f"skipped {newest['file']}: {newest['file']} does not match its catalog "
                                 "checksum (corrupt or altered); refusing it"]
    (backup_dir(settings) / older["file"]).unlink()
    with pytest.raises(BackupError, match=r"^no verified sqlite backup in .*catalog.json \(run: orch backup "
                                          rf"create\); skipped {newest['file']}: {newest['file']} does not match .*; "
                                          rf"skipped {older['file']}: its file is missing$"):
        restore_backup(settings, "latest")


def test_backup_list_shows_each_entrys_verification(settings: Settings, isolated_env: Path) -> None:
    older, newest = two_backups_newest_corrupt(settings)
    stranger = backup_dir(settings) / "copied_by_hand.db.gz"
    stranger.write_bytes((backup_dir(settings) / older["file"]).read_bytes())
    env = {"ORCH_HOME": str(isolated_env)}
    assert run_orch("backup", "verify", newest["file"], env=env).returncode == 1
    listed = run_orch("backup", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    [older_line] = [line for line in listed.stdout.splitlines() if older["file"] in line]
    [newest_line] = [line for line in listed.stdout.splitlines() if newest["file"] in line]
    [stranger_line] = [line for line in listed.stdout.splitlines() if stranger.name in line]
    assert f"{older['file']}  verified {older['verified_at'][:19]}" in older_line
    assert f"{newest['file']}  FAILED 20" in newest_line and newest_line.endswith(
        "does not match its catalog checksum (corrupt or altered); refusing it")
    assert stranger_line.endswith("copied_by_hand.db.gz  never verified (not in the catalog)")
    as_json = {e["file"]: e["verification"] for e in json.loads(run_orch("backup", "list", "--json", env=env).stdout)}
    assert as_json[stranger.name] == "never verified (not in the catalog)"
    assert as_json[older["file"]].startswith("verified ") and as_json[newest["file"]].startswith("FAILED ")


def in_terminal(args: list[str], answer: str, env: dict[str, str], prompt: bytes = b"Restore? [y/N]:",
                timeout: float = 120) -> tuple[int, str]:
    """Run ``orch`` on a real pseudo-terminal, answer its prompt, return (exit code, everything it printed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([str(BIN / "orch"), *args], stdin=slave, stdout=slave, stderr=slave,
                               env={**os.environ, **env}, close_fds=True)
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and prompt in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, output.decode(errors="replace").replace("\r\n", "\n")


def test_restore_asks_before_it_replaces_anything(settings: Settings, isolated_env: Path) -> None:
    older, newest = two_backups_newest_corrupt(settings)
    env = {"ORCH_HOME": str(isolated_env)}
    pre_restore = backup_dir(settings) / "pre_restore"

    headless = run_orch("backup", "restore", "latest", env=env)
    assert headless.returncode == 1
    assert headless.stderr == ("error: restore replaces the live database and there is no terminal to confirm "
                               "on: pass --yes\n")
    assert task_count(settings) == 6

    code, printed = in_terminal(["backup", "restore", "latest"], "n", env)
    assert code == 1, printed
    assert f"skipped {newest['file']}: " in printed
    assert f"with {older['file']} (" in printed and "tasks 3" in printed
    kept_as = printed.split("The current database will be kept as ")[1].split()[0]
    assert Path(kept_as).parent == pre_restore
    assert "error: restore cancelled: nothing was changed" in printed
    assert task_count(settings) == 6 and not (pre_restore.exists() and list(pre_restore.iterdir()))

    code, printed = in_terminal(["backup", "restore", "latest"], "y", env)
    assert code == 0, printed
    kept_as = printed.split("The current database will be kept as ")[1].split()[0]
    assert f"- pre-restore copy {kept_as}" in printed and f"restored {older['file']} into " in printed
    dispose_engines()
    assert task_count(settings) == 3
    assert sqlite3.connect(kept_as).execute("SELECT count(*) FROM tasks").fetchone()[0] == 6

    put(settings, 1)
    confirmed = run_orch("backup", "restore", older["file"], "--yes", env=env)
    assert confirmed.returncode == 0, confirmed.stderr
    assert "This replaces" not in confirmed.stdout and task_count(settings) == 3


def snapshot(settings: Settings, home: Path) -> dict[str, Any]:
    """Every row of every table, and every file under ORCH_HOME but the live database's own files (a
    reader may checkpoint SQLite's WAL into it: the same rows, other bytes)."""
    db = Path(settings.database.url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(db)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))) for table in tables}
    finally:
        conn.close()
    files = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(home.rglob("*")) if p.is_file() and not p.name.startswith(db.name)}
    return {"rows": rows, "files": files}


def all_files(home: Path) -> dict[str, str]:
    """Every file's checksum, but the ``-corrupt`` marker any reader of a damaged database leaves (it
    records what was seen, as ``/health`` does; it repairs nothing)."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith("-corrupt")}


def test_recover_dry_run_prints_the_plan_and_changes_nothing(settings: Settings, isolated_env: Path) -> None:
    env = {"ORCH_HOME": str(isolated_env)}
    ids = put(settings, 5)
    backup = create_backup(settings, "manual")
    failed = sorted(ids[:3])
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(update(Task).where(Task.task_id.in_(failed)).values(status="failed", error="boom"))
        session.add(ResourceLock(resource="gpu-0", owner="gone", priority=1, acquired_at=utcnow(),
                                 expires_at=utcnow().replace(year=2000)))
    (isolated_env / "data" / "locks").mkdir(parents=True, exist_ok=True)
    (isolated_env / "data" / "locks" / "old-system.lock").write_text("1234")
    assert run_orch("backup", "list", env=env).returncode == 0  # the CLI's own first-run files exist now
    dispose_engines()
    before = snapshot(settings, isolated_env)

    plan = run_orch("recover", "--dry-run", "--emergency", env=env, timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    lines = {line.split(":")[0]: line for line in plan.stdout.splitlines() if line.startswith(("ok", "FAIL"))}
    assert lines["ok   failed-tasks"].endswith(f"plan: would re-queue 3: {', '.join(failed)}") or \
        set(lines["ok   failed-tasks"].split("would re-queue 3: ")[1].split(", ")) == set(failed)
    assert "plan: would remove gpu-0, old-system.lock" in lines["ok   stale-locks"]
    assert lines["ok   database"].endswith("plan: nothing")
    assert "ok   disk-space" in lines and "ok   health" in lines
    assert plan.stdout.rstrip().endswith("emergency-recovery plan printed; nothing was changed "
                                         "(run without --dry-run to act)")
    assert snapshot(settings, isolated_env) == before

    db = isolated_env / "data" / "orch.db"
    corrupt(db)
    files = all_files(isolated_env)
    assert "data/orch.db" in files
    plan = run_orch("recover", "--dry-run", env=env, timeout=120)
    assert "ok   database: found " in plan.stdout
    assert (f"plan: would restore the newest backup that verifies, trying {backup['file']} (taken "
            f"{backup['created_at']}) first, because the database is corrupt") in plan.stdout
    assert plan.returncode == 1 and plan.stderr.startswith("error: service-recovery dry run: ")
    assert plan.stderr.rstrip().endswith("(nothing was changed)")
    assert all_files(isolated_env) == files


def test_task_creation_is_one_audit_event_that_tasks_from_logs_rebuilds(api: Api, isolated_env: Path) -> None:
    settings = api.settings
    env = {"ORCH_HOME": str(isolated_env)}
    dispatched = run_orch("dispatch", "--core", "WORK_AI_07", "--action", "external", "--priority", "high",
                          "--param", "prompt=summarise the logs", "--param", "api_token=tok-0123456789abcdef",
                          "--tag", "nightly", env=env)
    assert dispatched.returncode == 0, dispatched.stderr
    cli_id = json.loads(dispatched.stdout)["task_id"]
    body = {"core_id": "WORK_AI_08", "action": "external", "priority": "low", "timeout": 120,
            "params": {"prompt": "count the words", "limits": {"words": 500}}}
    response = api.client.post("/dispatch", json=body, headers=api.headers("operator"))
    assert response.status_code == 202, response.text
    api_id = response.json()["task_id"]

    audit = [json.loads(line) for line in Path(settings.logging.audit_file).read_text().splitlines()]
    creations = [e for e in audit if e["action"] == "task.create"]
    assert [[t["task_id"] for t in e["details"]["tasks"]] for e in creations] == [[cli_id], [api_id]]
    assert creations[0]["details"]["tasks"][0]["params"] == {"prompt": "summarise the logs", "api_token": MASK}
    assert "tok-0123456789abcdef" not in Path(settings.logging.audit_file).read_text()

    with session_scope(settings.database, write_lock=True) as session:  # the database lost both
        session.query(TaskEvent).filter(TaskEvent.task_id.in_([cli_id, api_id])).delete()
        session.query(Task).filter(Task.task_id.in_([cli_id, api_id])).delete()
    applied = run_orch("recover", "tasks-from-logs", "--apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "found 2 task(s)" in applied.stdout and "inserted 2" in applied.stdout
    assert "1 missing task(s) had masked params: inserted as cancelled, to be dispatched again" in applied.stdout
    with session_scope(settings.database) as session:
        from_api = session.get(Task, api_id)
        assert from_api is not None and from_api.params == body["params"] and from_api.core_id == "WORK_AI_08"
        assert from_api.owner == "oscar" and from_api.timeout == 120 and from_api.priority == 0  # low
        assert from_api.status == "failed" and "outcome unknown" in (from_api.error or "")
        from_cli = session.get(Task, cli_id)
        assert from_cli is not None and from_cli.params == {"prompt": "summarise the logs", "api_token": MASK}
        assert from_cli.status == "cancelled" and from_cli.meta["recovered_params_masked"] == ["params.api_token"]
        assert "params.api_token were masked in the log: dispatch it again with the real values" in from_cli.error
        assert from_cli.meta["tags"] == ["nightly"] and from_cli.owner.startswith("cli:")
    assert TaskQueue(settings).reset_failed("test", [cli_id]) == []  # nothing re-queues it with ***
