"""Backups, verification, restore and retention on real SQLite files and a real PostgreSQL server.

Nothing is mocked: failures are made the way they happen (a truncated or bit-flipped file, a writer
holding the database, a process killed mid-way, a row that breaks the data-quality suite).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from support import BIN, wait_until

from orch.backup.catalog import Catalog
from orch.backup.create import create_backup
from orch.backup.files import BackupError, backup_dir
from orch.backup.restore import check, restore_backup
from orch.backup.retention import prune
from orch.config.schema import Settings
from orch.dispatch.queue import DISPATCH_PAUSE_LOCK, TaskQueue
from orch.dispatch.request import validate
from orch.storage.engine import get_engine, session_scope
from orch.storage.models import AuditRecord, ResourceLock, Task


@pytest.fixture
def sqlite_settings(isolated_env: Path) -> Settings:
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    loaded = load_settings(environ={"ORCH_HOME": str(isolated_env)}, generate_secrets=False)
    loaded.dispatch.core_concurrency = 100
    upgrade(loaded.database, create_database=True)
    return loaded


def put(settings: Settings, n: int = 1, core: str = "WORK_AI_01") -> list[str]:
    """Queue ``n`` tasks the way the API does (one transaction per batch of up to 500)."""
    queue, ids = TaskQueue(settings), []
    for start in range(0, n, 500):
        batch = [validate({"core_id": core, "action": "noop"}, settings) for _ in range(min(500, n - start))]
        ids += [task["task_id"] for task, _ in queue.enqueue_many(batch, "tester")]
    return ids


def task_count(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(Task)))


def live_file(settings: Settings) -> Path:
    from orch.backup.sqlite import sqlite_path

    return sqlite_path(settings.database.url or "")


def backup_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in backup_dir(settings).iterdir() if p.name.startswith("orch_backup_"))


def test_backup_while_dispatch_writes_is_a_consistent_verified_copy(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    put(settings, 200)
    stop, errors, written = threading.Event(), [], []

    def dispatch_traffic() -> None:  # enqueue, claim and finish, as the API and dispatcher do
        queue = TaskQueue(settings)
        while not stop.is_set():
            try:
                written.extend(put(settings, 5))
                for claim in queue.claim("bench", 5):
                    queue.finish(claim, "completed")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
            stop.wait(0.01)  # a steady stream, not a GIL-hogging spin (pacing, not synchronisation)

    writer = threading.Thread(target=dispatch_traffic)
    writer.start()
    try:
        # Traffic is flowing before the snapshot and goes on after it: waited for, not slept on.
        wait_until(lambda: written or errors, 60, "the writer's first tasks", interval=0.01)
        entry = create_backup(settings, "manual")
        wait_until(lambda: task_count(settings) > entry["row_counts"]["tasks"] or errors, 60,
                   "the writer to go on after the snapshot", interval=0.01)
    finally:
        stop.set()
        writer.join()
    assert errors == []
    assert entry["verified"] and entry["validation"]["success"] and entry["integrity"] == "ok"
    copy = backup_dir(settings) / "check.db"
    with gzip.open(backup_dir(settings) / entry["file"]) as src, open(copy, "wb") as dst:
        shutil.copyfileobj(src, dst)
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    orphans = conn.execute("SELECT count(*) FROM task_events e LEFT JOIN tasks t USING (task_id) "
                           "WHERE t.task_id IS NULL").fetchone()[0]
    # every task has its creation event and every finished task its end: one transaction each
    unpaired = conn.execute("SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM task_events e "
                            "WHERE e.task_id = t.task_id AND e.event_type = 'task.created')").fetchone()[0]
    conn.close()
    assert orphans == 0 and unpaired == 0
    assert entry["row_counts"]["tasks"] == tasks
    assert 200 < tasks < task_count(settings)  # a snapshot from the middle of the traffic
    assert Catalog(backup_dir(settings)).entries() == [entry]
    assert entry["sha256"] == hashlib.sha256((backup_dir(settings) / entry["file"]).read_bytes()).hexdigest()


def test_failing_data_quality_suite_keeps_the_backup_out_of_the_catalog(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    put(settings, 3)
    with get_engine(settings.database).begin() as connection:  # what no ORCH code would write
        connection.execute(text("UPDATE tasks SET status = 'exploded' WHERE rowid = 1"))
    with pytest.raises(BackupError, match=r"data-quality suite failed: tasks\.status "
                                          r"expect_column_values_to_be_in_set \(1\); backup not kept"):
        create_backup(settings, "manual")
    assert backup_files(settings) == []
    assert Catalog(backup_dir(settings)).entries() == []


def test_truncated_and_bit_flipped_backups_are_refused_and_change_nothing(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    put(settings, 5)
    entry = create_backup(settings, "manual")
    put(settings, 2)  # the live database moves on; a refused restore must not lose this
    directory = backup_dir(settings)
    good = (directory / entry["file"]).read_bytes()

    (directory / entry["file"]).write_bytes(good[: len(good) // 2])  # truncated in place: checksum catches it
    with pytest.raises(BackupError, match="does not match its catalog checksum"):
        restore_backup(settings, entry["file"])
    (directory / entry["file"]).write_bytes(good)

    truncated = directory / "truncated.db.gz"  # outside the catalog: only gzip can tell
    truncated.write_bytes(good[: len(good) - 100])
    with pytest.raises(BackupError, match="truncated.db.gz is corrupt or truncated"):
        restore_backup(settings, str(truncated))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    bitflip = directory / "bitflip.db.gz"
    bitflip.write_bytes(bytes(flipped))
    with pytest.raises(BackupError, match="corrupt or truncated"):
        restore_backup(settings, bitflip.name)
    truncated.unlink()
    bitflip.unlink()

    assert task_count(settings) == 7
    assert not (directory / "pre_restore").exists() or not list((directory / "pre_restore").iterdir())
    assert [p.name for p in directory.iterdir() if p.name.startswith(".restore")] == []
    assert check(settings, "latest").steps[0] == "checksum matches the catalog"  # the real one still verifies


def test_a_backup_outside_the_backup_directory_is_refused_unread(sqlite_settings: Settings,
                                                                 tmp_path: Path) -> None:
    """Whoever may start the restore flow names the file it opens: a path leading out of the backup
    directory is refused before it is opened, and the refusal never echoes a byte of it."""
    settings = sqlite_settings
    put(settings, 2)
    directory = backup_dir(settings)
    secret = tmp_path / "secret.db.gz"
    secret.write_bytes(b"TOP-SECRET-BYTES\n")
    (directory / "leads-out.db.gz").symlink_to(secret)
    for ref in ("/etc/passwd", "../x", str(secret), "leads-out.db.gz", f"{directory}/../../secret.db.gz"):
        with pytest.raises(BackupError, match="is outside the backup directory") as refused:
            check(settings, ref)
        assert "TOP-SECRET" not in str(refused.value) and "b'" not in str(refused.value)
        with pytest.raises(BackupError, match="is outside the backup directory"):
            restore_backup(settings, ref)
    assert task_count(settings) == 2
    with pytest.raises(BackupError, match="^backup file not found: nope.db.gz$"):
        check(settings, "nope.db.gz")  # a name inside that is not there: as before


def test_restore_flow_refuses_etc_passwd_without_echoing_it(prefect_server: str, isolated_env: Path) -> None:
    from flows.restore import restore
    from orch.config.runtime import get_settings
    from orch.storage.migrate import upgrade

    upgrade(get_settings().database, create_database=True)
    state = restore(backup="/etc/passwd", return_state=True)
    assert state.is_failed()
    assert "'/etc/passwd' is outside the backup directory" in (state.message or "")
    assert "b'" not in (state.message or "") and "root:" not in (state.message or "")


def test_restore_latest_replaces_the_data_and_keeps_a_pre_restore_copy(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    kept = put(settings, 4)
    create_backup(settings, "manual")
    put(settings, 3)
    report = restore_backup(settings, "latest")
    with session_scope(settings.database) as session:
        assert sorted(session.scalars(select(Task.task_id))) == sorted(kept)
        assert session.scalars(select(ResourceLock.resource)).all() == []  # pause and lock released
        [audit] = session.scalars(select(AuditRecord).where(AuditRecord.action == "backup.restore")).all()
        assert audit.resource_id == report["restored"] and audit.actor == "restore"
    pre = Path(report["pre_restore_copy"])
    assert sqlite3.connect(pre).execute("SELECT count(*) FROM tasks").fetchone()[0] == 7
    assert "dispatch paused, orch:database held" in report["steps"] and report["steps"][-1] == "dispatch resumed"


def test_restore_refused_while_another_writer_holds_the_database(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    put(settings, 2)
    create_backup(settings, "manual")
    put(settings, 1)
    settings.database.timeout = 1
    blocker = sqlite3.connect(live_file(settings), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackupError, match="live database is busy .*nothing was changed"):
            restore_backup(settings, "latest")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert task_count(settings) == 3


def test_restore_killed_mid_way_leaves_old_or_new_never_a_mix(sqlite_settings: Settings) -> None:
    """The swap is one SQLite transaction: SIGKILL at any moment leaves a sound database."""
    settings = sqlite_settings
    put(settings, 3000)
    create_backup(settings, "manual")
    new = put(settings, 500)
    env = {**os.environ, "ORCH_HOME": str(Path.cwd())}
    process = subprocess.Popen([str(BIN / "orch"), "backup", "restore", "latest", "--yes"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            with session_scope(settings.database) as session:
                if session.get(ResourceLock, DISPATCH_PAUSE_LOCK) is not None:
                    break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    conn = sqlite3.connect(live_file(settings))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    conn.close()
    assert count in (3000, 3500)
    if count == 3500:  # killed before the swap committed: nothing of the backup got in
        assert task_count(settings) == 3500 and new
    with session_scope(settings.database) as session:
        pause = session.get(ResourceLock, DISPATCH_PAUSE_LOCK)
    if pause is not None:  # the dead restorer's pause frees itself within its TTL
        assert pause.expires_at <= datetime.now(timezone.utc) + timedelta(seconds=61)


def test_interrupted_backup_leaves_nothing_that_counts(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    put(settings, 500)
    env = {**os.environ, "ORCH_HOME": str(Path.cwd())}
    process = subprocess.Popen([str(BIN / "orch"), "backup", "create"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = backup_dir(settings)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if any(".partial" in p.name for p in directory.iterdir()):
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # mid-verification: the copy exists, nothing is published
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert any(".partial" in name for name in backup_files(settings))
    assert not any(name.endswith((".db.gz", ".dump")) for name in backup_files(settings))
    assert Catalog(directory).entries() == []
    from orch.dispatch.locks import LockManager

    LockManager(settings).release("orch:database")  # what an operator does rather than wait out the TTL
    entry = create_backup(settings, "manual")  # the next backup sweeps the leftovers
    assert backup_files(settings) == [entry["file"]]
    assert [e["file"] for e in Catalog(directory).entries()] == [entry["file"]]


def test_retention_keeps_the_newest_verified_and_dry_run_deletes_nothing(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.backup.keep_last = 2
    put(settings, 1)
    entries = [create_backup(settings, "manual") for _ in range(4)]
    directory = backup_dir(settings)
    loose = directory / "orch_backup_19990101_000000.db.gz"  # an unverified leftover, old
    loose.write_bytes(b"junk")
    os.utime(loose, (time.time() - 40 * 86400,) * 2)
    fresh_loose = directory / "orch_backup_29990101_000000.db.gz"
    fresh_loose.write_bytes(b"junk")
    later = datetime.now(timezone.utc) + timedelta(days=31)
    os.utime(fresh_loose, (later.timestamp() - 86400,) * 2)  # within retention on the day of the prune

    dry = prune(settings, dry_run=True, now=later)
    assert sorted(item["file"] for item in dry["remove"]) == sorted(
        [entries[0]["file"], entries[1]["file"], loose.name])
    assert len(backup_files(settings)) == 6  # nothing deleted

    done = prune(settings, now=later)
    assert done["remove"] == dry["remove"]
    assert backup_files(settings) == sorted([entries[2]["file"], entries[3]["file"], fresh_loose.name])
    assert [e["file"] for e in Catalog(directory).entries()] == [entries[2]["file"], entries[3]["file"]]
    much_later = prune(settings, now=later + timedelta(days=365))["remove"]
    assert [item["file"] for item in much_later] == [fresh_loose.name]  # the newest 2 verified always stay


def test_full_backup_adds_prefect_database_and_config_without_secrets(isolated_env: Path) -> None:
    import tarfile

    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    secret = "s3cr3t-jwt-value-that-must-not-leak"
    settings = load_settings(environ={"ORCH_HOME": str(isolated_env), "JWT_SECRET": secret,
                                      "DATABASE_URL": f"sqlite:///{isolated_env}/data/orch.db"},
                             generate_secrets=False)
    upgrade(settings.database, create_database=True)
    prefect_db = isolated_env / "data" / "prefect" / "prefect.db"
    prefect_db.parent.mkdir(parents=True)
    sqlite3.connect(prefect_db).executescript("CREATE TABLE flow_run (id TEXT); INSERT INTO flow_run VALUES ('r1');")
    evidence = isolated_env / "observability" / "sbom"
    (evidence / "keys").mkdir(parents=True)
    (evidence / "sbom.json").write_text('{"bomFormat": "CycloneDX"}')
    (evidence / "keys" / "private_key.pem").write_text("PRIVATE")  # the signing key stays out
    entry = create_backup(settings, "full")
    extras = backup_dir(settings) / entry["extras"]["file"]
    assert entry["extras"]["contents"] == ["prefect/prefect.db", "config/settings.json", "sbom/sbom.json"]
    with tarfile.open(extras) as tar:
        config = tar.extractfile("config/settings.json").read().decode()  # type: ignore[union-attr]
        assert secret not in config and json.loads(config)["security"]["jwt_secret"] == "**********"
        tar.extract("prefect/prefect.db", isolated_env / "out", filter="data")
    copied = sqlite3.connect(isolated_env / "out" / "prefect" / "prefect.db")
    assert copied.execute("SELECT id FROM flow_run").fetchall() == [("r1",)]


def test_postgresql_backup_verify_and_restore_with_pg_tools(pg_url: str, isolated_env: Path) -> None:
    from orch.backup.postgres import tool_versions
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    settings = load_settings(environ={"ORCH_HOME": str(isolated_env), "DATABASE_URL": pg_url},
                             generate_secrets=False)
    upgrade(settings.database, create_database=True)
    versions = tool_versions(settings, pg_url)
    assert versions["compatible"], versions  # pg_dump/pg_restore of the server's major version
    kept = put(settings, 5)
    entry = create_backup(settings, "manual")
    assert entry["engine"] == "postgresql" and entry["file"].endswith(".dump")
    assert entry["row_counts"]["tasks"] == 5 and entry["validation"]["success"]
    assert (backup_dir(settings) / entry["file"]).read_bytes()[:5] == b"PGDMP"  # pg_dump -Fc
    put(settings, 2)
    report = restore_backup(settings, "latest")
    with session_scope(settings.database) as session:
        assert sorted(session.scalars(select(Task.task_id))) == sorted(kept)
        assert session.scalars(select(ResourceLock.resource)).all() == []
    assert Path(report["pre_restore_copy"]).read_bytes()[:5] == b"PGDMP"
    from sqlalchemy import create_engine

    from orch.storage.engine import normalise_url

    admin = create_engine(normalise_url(pg_url).set(database="postgres"))
    with admin.connect() as connection:  # the verification scratch databases are gone
        left = connection.execute(text("SELECT count(*) FROM pg_database WHERE datname LIKE 'orch_verify_%'"))
        assert left.scalar_one() == 0
    admin.dispose()
