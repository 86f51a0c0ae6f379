"""Storage on a real SQLite file and a real PostgreSQL database: schema, pragmas, checks, CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from support import free_port, run_orch, wait_until

from orch.config.schema import DatabaseSettings
from orch.storage.engine import StorageError, connection_scope, get_engine, session_scope
from orch.storage.health import check_database
from orch.storage.migrate import current_revision, head_revision, upgrade
from orch.storage.models import AuditRecord, Base, Task, TaskEvent


def new_task(task_id: str, **overrides: object) -> Task:
    fields: dict[str, object] = dict(task_id=task_id, core_id="WORK_AI_01", action="noop", priority=2,
                                     timeout=300, sort_key=0.0)
    fields.update(overrides)
    return Task(**fields)


@pytest.fixture
def database(database_url: str) -> DatabaseSettings:
    settings = DatabaseSettings(url=database_url, timeout=5)
    upgrade(settings, create_database=True)
    return settings


def test_upgrade_from_empty_reaches_head_and_is_idempotent(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url)
    first = upgrade(settings, create_database=True)
    assert (first.before, first.after) == (None, head_revision())
    again = upgrade(settings)
    assert not again.changed and current_revision(settings) == head_revision()


def test_models_and_migrations_agree(database: DatabaseSettings) -> None:
    """A model change without a migration (or the reverse) fails here, on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with get_engine(database).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == []


def test_sqlite_connection_pragmas(isolated_env: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite:///{isolated_env / 'p.db'}", timeout=7)
    with get_engine(settings).connect() as connection:
        pragma = lambda name: connection.execute(text(f"PRAGMA {name}")).scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 7000
        # Statement journals in memory: a task's insert (its trigger keeps core_load, its events' foreign
        # key) journals each row's pages, and in a temporary file a batch of 100 took 11-13 ms, not 8-9.
        assert pragma("temp_store") == 2  # MEMORY


def test_postgresql_sessions_bound_what_a_lost_client_holds(pg_url: str) -> None:
    """A session left idle inside a transaction (a frozen or vanished host) is ended by the server and
    its row locks freed, instead of holding them until TCP gives up (issue 18's lost host)."""
    settings = DatabaseSettings(url=pg_url, timeout=5, idle_transaction_timeout=0.5)
    upgrade(settings, create_database=True)
    engine = get_engine(settings)
    with engine.connect() as probe:
        assert probe.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "500ms"
        assert probe.execute(text("SHOW tcp_keepalives_idle")).scalar() == "10"
    with session_scope(settings) as session:
        session.add(new_task("t-idle"))
    stalled = engine.connect()
    stalled.begin()
    stalled.execute(text("SELECT * FROM tasks WHERE task_id = 't-idle' FOR UPDATE"))  # holds the row, then idles
    pid = stalled.execute(text("SELECT pg_backend_pid()")).scalar()

    def gone() -> bool:
        with engine.connect() as other:
            return other.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                 {"pid": pid}).scalar() == 0

    wait_until(gone, 30, "the server to end the session idle in its transaction")
    with session_scope(settings) as session:  # the row lock went with it
        session.execute(text("SELECT * FROM tasks WHERE task_id = 't-idle' FOR UPDATE NOWAIT"))
    stalled.invalidate()
    stalled.close()


def test_timestamps_round_trip_as_utc(database: DatabaseSettings) -> None:
    local = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=9)))
    with session_scope(database) as session:
        session.add(new_task("t-utc", created_at=local))
    with session_scope(database) as session:
        created = session.get(Task, "t-utc").created_at  # type: ignore[union-attr]
    assert created == local and created.tzinfo == timezone.utc and created.hour == 3


def test_events_cascade_and_require_a_task(database: DatabaseSettings) -> None:
    with session_scope(database) as session:
        task = new_task("t-ev")
        task.events.append(TaskEvent(event_type="task.created", data={"by": "test"}))
        session.add(task)
    with pytest.raises(IntegrityError), session_scope(database) as session:
        session.add(TaskEvent(task_id="no-such-task", event_type="task.created", data={}))
    with session_scope(database) as session:
        session.delete(session.get(Task, "t-ev"))
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(TaskEvent)) == 0


def test_idempotency_key_unique_per_owner(database: DatabaseSettings) -> None:
    with session_scope(database) as session:
        session.add(new_task("a", owner="alice", idempotency_key="k1"))
        session.add(new_task("b", owner="bob", idempotency_key="k1"))
    with pytest.raises(IntegrityError), session_scope(database) as session:
        session.add(new_task("c", owner="alice", idempotency_key="k1"))


def test_failed_transaction_leaves_no_rows(database: DatabaseSettings) -> None:
    with pytest.raises(RuntimeError), session_scope(database) as session:
        session.add(AuditRecord(actor="t", action="x", resource="r", details={}))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0


@pytest.mark.parametrize("write_lock", [False, True])
def test_connection_scope_commits_or_leaves_nothing(database: DatabaseSettings, write_lock: bool) -> None:
    """The ORM-less scope has the session scope's guarantees: a commit, or no rows at all."""
    row = {"actor": "t", "action": "x", "resource": "r", "details": {}, "success": True,
           "timestamp": datetime.now(timezone.utc)}
    with connection_scope(database, write_lock=write_lock) as connection:
        connection.execute(insert(AuditRecord.__table__), row)
    with pytest.raises(RuntimeError), connection_scope(database, write_lock=write_lock) as connection:
        connection.execute(insert(AuditRecord.__table__), {**row, "action": "y"})
        raise RuntimeError("boom")
    with session_scope(database) as session:
        assert list(session.scalars(select(AuditRecord.action))) == ["x"]


HOLD_TURN = """
import sys, time
from pathlib import Path
from orch.config.schema import DatabaseSettings
from orch.storage.engine import session_scope
holding, release = Path(sys.argv[2]), Path(sys.argv[3])
with session_scope(DatabaseSettings(url=sys.argv[1], timeout=5), write_lock=True):
    holding.touch()
    deadline = time.monotonic() + 120
    while not release.exists():  # holds the turn until the test says so, however slow the machine
        assert time.monotonic() < deadline, "never told to let go"
        time.sleep(0.01)
"""


def test_sqlite_writers_of_other_processes_take_turns(isolated_env: Path) -> None:
    """Another process's writer holds the turn: this one waits for it (file lock), not in SQLite's
    sleeping busy handler, and says so in one line when the wait exceeds database.timeout.

    The holder keeps the turn until the test releases it, so the order is explicit: the impatient
    writer gives up while it is held, and the patient one gets the turn only after the release was
    ordered (it finds the release file) and long before its own timeout (else it would raise)."""
    url = f"sqlite:///{isolated_env / 'data' / 'orch.db'}"
    upgrade(DatabaseSettings(url=url), create_database=True)
    holding, release = isolated_env / "holding", isolated_env / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_TURN, url, str(holding), str(release)])
    try:
        def holds() -> bool:
            assert holder.poll() is None, f"the holder exited with code {holder.returncode}"
            return holding.exists()

        wait_until(holds, 60, "the other process to take the write turn", interval=0.02)
        impatient = DatabaseSettings(url=url, timeout=0.3)
        with pytest.raises(StorageError, match="no write turn within 0.3 s"), \
                connection_scope(impatient, write_lock=True):
            pass

        outcome: list[object] = []
        trying = threading.Event()

        def patient_writer() -> None:
            trying.set()
            try:
                with connection_scope(DatabaseSettings(url=url, timeout=120), write_lock=True) as connection:
                    outcome.append(release.exists())  # got the turn: only after the holder was told to go
                    connection.execute(text("SELECT 1"))
            except Exception as exc:  # noqa: BLE001 - asserted in the test's thread
                outcome.append(exc)

        writer = threading.Thread(target=patient_writer)
        writer.start()
        assert trying.wait(60)
        release.touch()
        writer.join(150)
        assert outcome == [True]
    finally:
        release.touch()
        holder.wait(150)
    assert holder.returncode == 0


def test_check_counts_tasks_of_the_last_hour(database: DatabaseSettings) -> None:
    now = datetime.now(timezone.utc)
    with session_scope(database) as session:
        session.add_all([new_task("new1"), new_task("new2"),
                         new_task("old", created_at=now - timedelta(hours=2))])
    health = check_database(database)
    assert health.healthy and health.recent_tasks == 2
    assert health.summary() == "Database healthy - 2 tasks in last hour"


def test_check_reports_uninitialised_database(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url)
    if database_url.startswith("sqlite"):
        assert check_database(settings).problem == "database file not found (run: orch db init)"
        assert not Path(database_url.removeprefix("sqlite:///")).exists()  # the check created nothing
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        get_engine(settings).connect().close()
    assert check_database(settings).problem == "database is not initialised (run: orch db init)"


def test_check_reports_a_corrupt_sqlite_file(isolated_env: Path) -> None:
    path = isolated_env / "corrupt.db"
    settings = DatabaseSettings(url=f"sqlite:///{path}")
    upgrade(settings)
    with session_scope(settings) as session:
        session.add_all([new_task(f"t{i}", params={"pad": "x" * 2000}) for i in range(50)])
    with get_engine(settings).connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    from orch.storage.engine import dispose_engines

    dispose_engines()
    raw = bytearray(path.read_bytes())
    raw[4096 * 3: 4096 * 3 + 4096] = b"\xff" * 4096  # wreck a page in the middle
    path.write_bytes(bytes(raw))
    health = check_database(settings)
    assert not health.healthy
    assert health.problem and ("integrity check failed" in health.problem or "malformed" in health.problem)


def test_unreachable_postgres_is_one_clear_line() -> None:
    port = free_port()
    settings = DatabaseSettings(url=f"postgresql://orch:s3cret-pw@127.0.0.1:{port}/orch", timeout=2)
    with pytest.raises(StorageError) as caught:
        upgrade(settings, create_database=True)
    message = str(caught.value)
    assert message.startswith(f"database postgresql://orch:***@127.0.0.1:{port}/orch: ")
    assert "s3cret-pw" not in message and "\n" not in message


def test_init_creates_missing_postgres_database(pg_url: str) -> None:
    from sqlalchemy import make_url

    url = make_url(pg_url)
    missing = url.set(database=f"{url.database}_created").render_as_string(hide_password=False)
    settings = DatabaseSettings(url=missing)
    try:
        assert upgrade(settings, create_database=True).after == head_revision()
        assert check_database(settings).healthy
    finally:
        from sqlalchemy import create_engine

        from orch.storage.engine import dispose_engines, normalise_url

        dispose_engines()
        admin = create_engine(normalise_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}_created" WITH (FORCE)'))
        admin.dispose()


def test_cli_init_migrate_check(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    result = run_orch("db", "migrate", env=env)
    assert result.returncode == 1 and "is not initialised (run: orch db init)" in result.stderr
    result = run_orch("db", "check", env=env)
    assert result.returncode == 1 and result.stderr.startswith("error: Database unhealthy - ")

    result = run_orch("db", "init", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"created at schema {head_revision()}")
    assert "already initialised" in run_orch("db", "init", env=env).stdout
    assert f"already at {head_revision()}" in run_orch("db", "migrate", env=env).stdout

    result = run_orch("db", "check", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Database healthy - 0 tasks in last hour"


def test_cli_unreachable_database_is_one_line() -> None:
    result = run_orch("db", "init", env={"DATABASE_URL": f"postgresql://u:pw-123456@127.0.0.1:{free_port()}/x"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database postgresql://u:***@127.0.0.1:")
    assert "pw-123456" not in result.stderr


def test_cli_read_only_data_directory(isolated_env: Path) -> None:
    import os

    if os.geteuid() == 0:
        # root ignores permission bits; a read-only bind is what a real operator would hit
        target = Path("/proc/orch-readonly-test")
    else:
        target = isolated_env / "ro"
        target.mkdir()
        target.chmod(0o500)
    result = run_orch("db", "init", env={"ORCH_DATA_DIR": str(target / "data")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data_dir: cannot write "), lines
    assert str(target / "data") in lines[0]


def test_upgrade_keeps_rows_written_by_the_previous_schema(database_url: str) -> None:
    """Restores of older backups migrate forward: rows written at 0001 survive the upgrade to head."""
    from alembic import command

    from orch.storage.migrate import _alembic_config

    settings = DatabaseSettings(url=database_url)
    from orch.storage.migrate import ensure_database_exists

    ensure_database_exists(settings)
    with get_engine(settings).begin() as connection:
        command.upgrade(_alembic_config(connection), "0001")
        connection.execute(text(
            "INSERT INTO tasks (task_id, core_id, action, params, priority, timeout, stay, metadata, owner,"
            " max_retries, status, attempts, created_at, updated_at) VALUES ('old-1', 'WORK_AI_01', 'noop',"
            " '{}', 1, 300, false, '{}', '', 0, 'queued', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    assert upgrade(settings).after == head_revision()
    with session_scope(settings) as session:
        task = session.get(Task, "old-1")
        assert task is not None and task.locks == [] and task.sort_key == 0 and task.status == "queued"


def test_upgrade_to_0006_keeps_users_and_their_scrypt_hashes(database_url: str) -> None:
    """0006 drops the account-lock columns and adds token_version: users written at 0005 (a scrypt hash,
    a lock in force) come out at version 0, their hash still verifying (it is replaced at the next login)."""
    import base64
    import hashlib

    from alembic import command

    from orch.security.passwords import needs_rehash, verify_password
    from orch.storage.migrate import _alembic_config, ensure_database_exists
    from orch.storage.models import User

    settings = DatabaseSettings(url=database_url)
    ensure_database_exists(settings)
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"Old-Password-1!", salt=salt, n=2**14, r=8, p=1, dklen=32)
    old_hash = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    with get_engine(settings).begin() as connection:
        command.upgrade(_alembic_config(connection), "0005")
        connection.execute(text(
            "INSERT INTO users (username, password_hash, role, is_active, failed_attempts, locked_until,"
            " created_at, updated_at) VALUES ('old', :hash, 'admin', true, 3, '2030-01-01 00:00:00',"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"), {"hash": old_hash})
    assert upgrade(settings).after == head_revision()
    with session_scope(settings) as session:
        user = session.scalars(select(User).where(User.username == "old")).one()
        assert (user.role, user.is_active, user.token_version) == ("admin", True, 0)
        assert verify_password("Old-Password-1!", user.password_hash) and needs_rehash(user.password_hash)
        assert not verify_password("Old-Password-2!", user.password_hash)
