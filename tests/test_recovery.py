"""Recovery and maintenance on real databases: corruption detected and repaired from the newest verified
backup, tasks rebuilt from real JSON log lines, retention purges, and the flows on the real Prefect server."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from receivers import http_receiver
from sqlalchemy import func, select, update
from support import run_orch

from orch.config.runtime import get_settings, reset_settings_cache
from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.engine import dispose_engines, session_scope
from orch.storage.migrate import upgrade
from orch.storage.models import AlertEvent, AuditRecord, HealRun, MonitorSample, ResourceLock, Task, TaskEvent
from orch.storage.types import utcnow


def put(settings: Settings, n: int) -> list[str]:
    batch = [validate({"core_id": "WORK_AI_01", "action": "noop"}, settings) for _ in range(n)]
    return [task["task_id"] for task, _ in TaskQueue(settings).enqueue_many(batch, "tester")]


def count(settings: Settings, model: type) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def corrupt(db: Path) -> None:
    """Overwrite pages in the middle of the file, as a failing disk or a torn write would."""
    dispose_engines()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db.stat().st_size
    with open(db, "r+b") as handle:
        for offset in (size // 3, size // 2, 2 * size // 3):
            handle.seek(offset)
            handle.write(b"\xde\xad\xbe\xef" * 1024)


def test_corruption_found_by_db_check_and_repaired_by_emergency_recovery(
        prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.recovery import emergency_recovery
    from orch.backup.create import create_backup

    with http_receiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url)
        reset_settings_cache()
        settings = get_settings()
        upgrade(settings.database)
        put(settings, 400)
        entry = create_backup(settings, "daily")
        put(settings, 50)  # lost with the corruption: the backup is the newest sound state
        corrupt(isolated_env / "data" / "orch.db")

        checked = run_orch("db", "check", env={"ORCH_HOME": str(isolated_env)})
        assert checked.returncode == 1
        assert checked.stderr.startswith("error: Database unhealthy - ")
        assert "malformed" in checked.stderr or "integrity check failed" in checked.stderr

        state = emergency_recovery(return_state=True)
        assert state.is_completed(), state.message
        report = {step["step"]: step for step in state.result()["steps"]}
        assert report["disk-space"]["did"] == "nothing"  # the disk is not low: nothing removed
        assert report["database"]["did"].startswith(f"restored {entry['file']}")
        assert "because the database is corrupt" in report["database"]["did"]
        assert report["health"]["database_healthy"] is True

        healthy = run_orch("db", "check", env={"ORCH_HOME": str(isolated_env)})
        assert healthy.returncode == 0, healthy.stderr
        assert count(settings, Task) == 400
        [message] = slack.json_bodies()
        assert "emergency-recovery completed" in message["text"] and "restored" in message["text"]


@pytest.mark.slow
def test_recovery_without_a_verified_backup_stops_and_asks_for_a_human(isolated_env: Path) -> None:
    env = {"ORCH_HOME": str(isolated_env)}
    assert run_orch("db", "init", env=env).returncode == 0
    settings = get_settings()
    put(settings, 400)
    corrupt(isolated_env / "data" / "orch.db")
    result = run_orch("recover", env=env, timeout=120)
    assert result.returncode == 1
    assert "FAIL database: found " in result.stdout
    assert "no verified backup, manual intervention required" in result.stdout
    assert result.stderr.strip() == "error: service-recovery failed: manual intervention required"


def test_tasks_rebuilt_from_real_log_lines_and_inserted_only_with_apply(isolated_env: Path) -> None:
    """Creations come from the audit trail the CLI appends to; how far a task got, from the process logs."""
    env = {"ORCH_HOME": str(isolated_env)}
    assert run_orch("db", "init", env=env).returncode == 0
    ids = []
    for priority in ("high", "low"):
        dispatched = run_orch("dispatch", "--core", "WORK_AI_07", "--action", "noop", "--priority", priority,
                              "--tag", "nightly", env=env)
        assert dispatched.returncode == 0, dispatched.stderr
        ids.append(json.loads(dispatched.stdout)["task_id"])
    log = isolated_env / "data" / "logs" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = {"event_type": "task.started", "task_id": ids[1], "core_id": "WORK_AI_07", "data": {"attempt": 1}}
    log.write_text("not json at all\n" + json.dumps(started) + "\n")
    settings = get_settings()
    with session_scope(settings.database, write_lock=True) as session:  # the database lost one of them
        session.query(TaskEvent).filter(TaskEvent.task_id == ids[1]).delete()
        session.query(Task).filter(Task.task_id == ids[1]).delete()

    dry = run_orch("recover", "tasks-from-logs", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "found 2 task(s) in 2 log file(s), 1 missing from the database" in dry.stdout
    assert dry.stdout.rstrip().endswith("nothing inserted (use --apply)")
    written = json.loads(Path(dry.stdout.split("written to ")[1].split()[0]).read_text())
    assert {t["task_id"]: t["missing_from_database"] for t in written} == {ids[0]: False, ids[1]: True}
    assert count(settings, Task) == 1

    applied = run_orch("recover", "tasks-from-logs", "--apply", env=env)
    assert applied.returncode == 0 and "inserted 1" in applied.stdout
    with session_scope(settings.database) as session:
        task = session.get(Task, ids[1])
        assert task is not None and task.core_id == "WORK_AI_07" and task.priority == 0
        assert task.status == "failed" and "outcome unknown (last event task.started)" in (task.error or "")
        assert task.meta["tags"] == ["nightly"] and task.meta["recovered_from_logs"] is True
        assert [e.event_type for e in session.scalars(select(TaskEvent).where(TaskEvent.task_id == ids[1]))] \
            == ["task.recovered"]
    again = run_orch("recover", "tasks-from-logs", "--apply", env=env)
    assert "inserted 0" in again.stdout and count(settings, Task) == 2
    missing = run_orch("recover", "tasks-from-logs", "--log", "nope.log", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: log file not found: nope.log"


def test_db_maintenance_flow_purges_past_retention_and_optimises(
        prefect_server: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.db_maintenance import db_maintenance

    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_settings_cache()
    settings = get_settings()
    upgrade(settings.database, create_database=True)
    old_task, new_task = put(settings, 2)
    now = utcnow()
    long_ago = now - timedelta(days=settings.maintenance.events_retention_days + 1)
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(update(Task).where(Task.task_id.in_([old_task, new_task]))
                        .values(status="completed", finished_at=long_ago))
        session.execute(update(TaskEvent).where(TaskEvent.task_id == old_task).values(timestamp=long_ago))
        session.add_all([
            AuditRecord(timestamp=now - timedelta(days=settings.maintenance.audit_retention_days + 1),
                        actor="old", action="x", resource="y"),
            AuditRecord(timestamp=now - timedelta(days=settings.maintenance.audit_retention_days - 1),
                        actor="kept", action="x", resource="y"),
            MonitorSample(timestamp=now - timedelta(seconds=settings.monitoring.metrics_retention + 60),
                          metric="cpu_percent", subject="host", value=1.0),
            MonitorSample(timestamp=now, metric="cpu_percent", subject="host", value=2.0),
            *[AlertEvent(timestamp=now - timedelta(seconds=settings.monitoring.metrics_retention + age),
                         alert_name="target_down", target=target, state="firing", severity="critical")
              for target, age in (("old", 60), ("kept", -60))],
            *[HealRun(started_at=now - timedelta(seconds=settings.monitoring.metrics_retention + age),
                      target=target, alert_name="target_down", outcome="healed")
              for target, age in (("old", 60), ("kept", -60))],
            ResourceLock(resource="db:orders", owner="gone", priority=1, acquired_at=long_ago,
                         expires_at=long_ago),
        ])
    audits_before = count(settings, AuditRecord)

    state = db_maintenance(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["purged"] == {"expired_locks": 1, "task_events": 1, "monitor_samples": 1, "alert_events": 1,
                                "heal_runs": 1, "audit_records": 1}
    with session_scope(settings.database) as session:
        assert session.scalars(select(TaskEvent.task_id)).all() == [new_task]  # recent events stay
        assert session.get(Task, old_task) is not None  # the task row stays
        assert [s.value for s in session.scalars(select(MonitorSample))] == [2.0]
        assert session.scalars(select(AlertEvent.target)).all() == ["kept"]
        assert session.scalars(select(HealRun.target)).all() == ["kept"]
        assert session.scalars(select(ResourceLock.resource)).all() == []  # and the maintenance lock went
    assert count(settings, AuditRecord) == audits_before - 1
    expected = ["ANALYZE", "REINDEX", "VACUUM", "PRAGMA optimize"] if database_url.startswith("sqlite") \
        else ["VACUUM ANALYZE"]
    assert result["optimised"]["steps"] == expected


def test_restore_flow_restores_and_a_refused_one_fails_with_the_reason(
        prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.restore import restore
    from orch.backup.create import create_backup

    with http_receiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url)
        reset_settings_cache()
        settings = get_settings()
        upgrade(settings.database)
        kept = put(settings, 3)
        entry = create_backup(settings, "manual")
        put(settings, 2)
        state = restore(backup="latest", return_state=True)
        assert state.is_completed(), state.message
        assert state.result()["restored"] == entry["file"]
        with session_scope(settings.database) as session:
            assert sorted(session.scalars(select(Task.task_id))) == sorted(kept)

        broken = isolated_env / "data" / "backups" / "broken.db.gz"
        broken.write_bytes(b"\x1f\x8b" + os.urandom(200))
        refused = restore(backup=str(broken), return_state=True)
        assert refused.is_failed()
        assert "broken.db.gz is corrupt or truncated" in (refused.message or "")
        assert count(settings, Task) == 3
        texts = [body["text"] for body in slack.json_bodies()]
        assert "ORCH-Next database restored" in texts[0]
        assert texts[1].startswith("<!channel> *[critical] ORCH-Next restore failed*")


def test_recovery_flow_dry_run_reports_the_plan_and_changes_nothing(
        prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.recovery import service_recovery

    with http_receiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url)
        reset_settings_cache()
        settings = get_settings()
        upgrade(settings.database)
        failed = sorted(put(settings, 3))
        with session_scope(settings.database, write_lock=True) as session:
            session.execute(update(Task).where(Task.task_id.in_(failed)).values(status="failed", error="boom"))
        state = service_recovery(dry_run=True, return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        assert result["dry_run"] is True and result["notification"] is None
        report = {step["step"]: step for step in result["steps"]}
        assert report["failed-tasks"]["did"].startswith("would re-queue 3: ")
        assert sorted(report["failed-tasks"]["task_ids"]) == failed
        with session_scope(settings.database) as session:
            assert set(session.scalars(select(Task.status))) == {"failed"}
        assert slack.json_bodies() == []  # a plan is for the operator who asked, not a notification


@pytest.mark.slow
def test_guide_scripts_run_the_same_code(isolated_env: Path) -> None:
    """The scripts at the guide's paths: emergency recovery on a healthy system changes nothing; the
    backup and restore scripts fail with one line and exit 1."""
    import subprocess

    from support import BIN

    from deployments.apply import PROJECT_ROOT

    env = {**os.environ, "ORCH_HOME": str(isolated_env)}
    scripts = PROJECT_ROOT / "scripts"
    early = subprocess.run([str(BIN / "python"), str(scripts / "backup_database.py")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert early.returncode == 1
    assert early.stderr.strip().endswith("orch.db not found (run: orch db init)")
    assert run_orch("db", "init", env=env).returncode == 0
    missing = subprocess.run([str(BIN / "python"), str(scripts / "restore_database.py"), "nope.db.gz"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: backup file not found: nope.db.gz")
    emergency = subprocess.run(["bash", str(scripts / "emergency_recovery.sh")], env=env, capture_output=True,
                               text=True, timeout=180)
    assert emergency.returncode == 0, emergency.stdout + emergency.stderr
    assert "ok   disk-space: found disk " in emergency.stdout and "did nothing" in emergency.stdout
    assert "ok   database: found Database healthy - 0 tasks in last hour; did nothing" in emergency.stdout
    assert emergency.stdout.rstrip().endswith("Emergency recovery completed successfully")
