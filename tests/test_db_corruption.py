"""A corrupt database is caught early: refused at start, found by the sweep, reported by /health, and no
work is accepted into it until a good copy is back (issue 15 item 5).

Real SQLite files with real damage (pages of the ``tasks`` B-tree overwritten, the file header intact so
it still opens), the real API app, the real ``orch`` CLI in child processes, the real sweep flow on the
session's Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_fixtures import add_users, api_for
from support import free_port, run_orch, wait_until

from orch.config.runtime import get_settings, reset_settings_cache
from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.engine import RECOVERY_HINT, corruption_marker, dispose_engines, known_corruption
from orch.storage.migrate import upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISPATCH = {"core_id": "WORK_AI_01", "action": "noop"}


def put(settings: Settings, n: int) -> None:
    batch = [validate(dict(DISPATCH), settings) for _ in range(n)]
    TaskQueue(settings).enqueue_many(batch, "tester")


CORRUPT = """
import sqlite3, sys
db, pages = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(db)
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
size = conn.execute("PRAGMA page_size").fetchone()[0]
leaves = [row[0] for row in conn.execute(
    "SELECT pageno FROM dbstat WHERE name = 'tasks' AND pagetype = 'leaf' ORDER BY pageno")]
conn.close()
assert len(leaves) > 3 * pages, "not enough tasks to damage the middle of their table"
middle = len(leaves) // 2
with open(db, "r+b") as handle:
    for page in leaves[middle:middle + pages]:
        handle.seek((page - 1) * size + 8)
        handle.write(bytes((i * 37 + page) % 251 for i in range(size - 8)))
"""


def corrupt_tasks(db: Path, pages: int = 3) -> None:
    """Overwrite ``pages`` leaf pages in the middle of the ``tasks`` B-tree (cell pointers and cells,
    past each page's 8-byte header), as a torn write or a failing disk would: the file still opens.

    In a child process: closing any descriptor of the file drops every POSIX lock this process's SQLite
    connections hold on it (the open API's included), which would break them in ways no disk does."""
    dispose_engines()
    subprocess.run([sys.executable, "-c", CORRUPT, str(db), str(pages)], check=True, timeout=60)


def fingerprint(db: Path) -> tuple[tuple[int, int], ...]:
    """Size and modification time of the database and its WAL: equal before and after means nothing
    was written. (``stat``, not a read: see :func:`corrupt_tasks` on descriptors of a live file.)"""
    files = (db, db.with_name(db.name + "-wal"))
    return tuple((path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else (-1, -1) for path in files)


@pytest.fixture
def sqlite_home(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This test's ORCH home on a SQLite file with 1,200 tasks, its API users, and no noisy thresholds."""
    config = {"database": {"url": f"sqlite:///{isolated_env}/data/orch.db"},
              "monitoring": {"orch_targets": False,
                             "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100, "disk_usage_percent": 100,
                                                  "prefect_zombie_runs": 1_000_000}},
              "dispatch": {"core_concurrency": 10_000}}
    path = isolated_env / "orch.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ORCH_CONFIG_PATH", str(path))
    for name, value in {"JWT_SECRET": "jwt-test-secret-0123456789abcdef",
                        "WEBHOOK_SECRET": "whsec-test-0123456789abcdef"}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    settings = get_settings()
    settings.security.rate_limit.requests_per_minute = 100_000
    settings.security.rate_limit.burst_size = 100_000
    upgrade(settings.database, create_database=True)
    add_users(settings)
    put(settings, 1200)
    yield settings


def db_file(settings: Settings) -> Path:
    return Path((settings.database.url or "").removeprefix("sqlite:///"))


def test_db_init_and_orch_up_refuse_a_corrupt_database_with_one_line(sqlite_home: Settings,
                                                                     isolated_env: Path) -> None:
    db = db_file(sqlite_home)
    assert run_orch("db", "init").returncode == 0  # sound: starts as before
    corrupt_tasks(db)

    init = run_orch("db", "init")
    assert init.returncode == 1
    assert init.stdout == ""
    [line] = init.stderr.splitlines()
    assert line.startswith(f"error: database is corrupt: sqlite:///{db}: On tree page ")
    assert line.endswith(f"; {RECOVERY_HINT}")
    assert "orch db init" in (known_corruption(sqlite_home.database.url or "") or "")  # remembered for /health

    env = {"ORCH_PORT": str(free_port()), "PREFECT_SERVER_API_PORT": str(free_port())}
    up = run_orch("up", env=env, timeout=120)
    assert up.returncode == 1
    assert "is up" not in up.stdout
    [line] = up.stderr.splitlines()
    assert line.startswith("error: database is corrupt: ") and "run: orch recover" in line
    api_log = isolated_env / "data" / "logs" / "api.log"  # the API is started ahead but released only on a
    served = [line for line in (api_log.read_text().splitlines() if api_log.exists() else [])
              if line.strip() and not line.startswith("--- ")]  # beyond the supervisor's "starting api" header
    assert not served, served  # sound database: it never served nor logged


def sweep_in_a_child() -> list[str]:
    """One monitoring sweep in its own process, as the worker runs it: not in this test's process, whose
    open API refuses writes to a corrupt database (samples and alerts included)."""
    code = "import json; from flows.monitor_sweep import monitor_sweep; print(json.dumps(monitor_sweep()['notices']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                          cwd=PROJECT_ROOT, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(420)
def test_sweep_fires_database_corrupt_health_says_so_writes_refused_until_recover(
        prefect_server: str, sqlite_home: Settings) -> None:
    from flows.monitor_sweep import monitor_sweep
    from orch.backup.create import create_backup
    from orch.monitoring.alerts import list_alerts
    from orch.monitoring.samples import latest

    settings, db = sqlite_home, db_file(sqlite_home)
    backup = create_backup(settings, "manual")
    assert "database_corrupt" not in " ".join(monitor_sweep()["notices"])  # sound: nothing to say
    with api_for(settings) as api:  # logged in while the file is sound: a login is a write too
        corrupt_tasks(db)
        assert "firing:database_corrupt@host" in sweep_in_a_child()
        [alert] = [a for a in list_alerts(settings, state="firing") if a["alert_name"] == "database_corrupt"]
        assert alert["severity"] == "critical"
        assert "the monitoring sweep" in (known_corruption(settings.database.url or "") or "")

        health = wait_until(lambda: (answer := api.client.get("/health")).status_code == 503 and answer, 30,
                            "/health to report the corrupt database (after its cache period)")
        database = health.json()["components"]["database"]
        assert database["status"] == "down"
        assert database["detail"].startswith("database is corrupt: ") and "run: orch recover" in database["detail"]

        before = fingerprint(db)
        refused = api.client.post("/dispatch", json=DISPATCH, headers=api.headers("operator"))
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["detail"].startswith("database is corrupt: ")
        assert "On tree page" in refused.json()["detail"] and "run: orch recover" in refused.json()["detail"]
        assert fingerprint(db) == before  # nothing was written into the damaged file

        recovered = run_orch("recover", timeout=180)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert f"restored {backup['file']}" in recovered.stdout
        assert known_corruption(settings.database.url or "") is None

        accepted = api.client.post("/dispatch", json=DISPATCH, headers=api.headers("operator"))
        assert accepted.status_code == 202, accepted.text
        wait_until(lambda: api.client.get("/health").json()["components"]["database"]["status"] == "ok", 30,
                   "/health to report the restored database as ok (after its cache period)")
    # The next sweep finds the file sound. (The firing alert's row was in the damaged file: the restore put
    # back the backup's alerts, so there is nothing to resolve; orch recover's own notification said it.)
    assert "database_corrupt" not in " ".join(monitor_sweep()["notices"])
    assert latest(settings, ("database_corrupt",)) == {("database_corrupt", "host"): 0.0}
    assert not [a for a in list_alerts(settings, state="firing") if a["alert_name"] == "database_corrupt"]


def test_a_malformed_page_met_by_any_statement_stops_writes_at_once(sqlite_home: Settings) -> None:
    settings, db = sqlite_home, db_file(sqlite_home)
    corrupt_tasks(db)
    assert known_corruption(settings.database.url or "") is None  # no check has run yet
    with api_for(settings) as api:
        pages = [api.client.get("/tasks", params={"limit": 500, "offset": offset}, headers=api.headers("admin"))
                 for offset in (0, 500, 1000)]
        failed = [page for page in pages if page.status_code != 200]
        assert failed, "reading every task met no damaged page"
        assert failed[0].status_code == 503
        assert failed[0].json()["detail"].startswith("database is corrupt: ")
        assert "found by a statement" in (known_corruption(settings.database.url or "") or "")

        before = fingerprint(db)
        refused = api.client.post("/dispatch", json=DISPATCH, headers=api.headers("operator"))
        assert refused.status_code == 503 and "database is corrupt" in refused.json()["detail"]
        assert fingerprint(db) == before


def test_a_sound_database_passes_and_postgresql_claims_no_check(settings: Settings) -> None:
    from orch.monitoring.samples import collect_database
    from orch.storage.health import check_corruption

    assert check_corruption(settings.database, "test") is None
    found = {sample.metric: sample.value for sample in collect_database(settings)}
    assert found["database_up"] == 1.0
    if (settings.database.url or "").startswith("sqlite"):
        assert found["database_corrupt"] == 0.0 and found["database_check_ms"] >= 0
    else:  # nothing is checked on PostgreSQL, so nothing is claimed
        assert "database_corrupt" not in found and corruption_marker(settings.database.url or "") is None


def test_a_marker_left_by_a_false_alarm_is_cleared_by_the_next_check_that_passes(sqlite_home: Settings) -> None:
    from orch.storage.engine import mark_corrupt
    from orch.storage.health import check_corruption

    url = sqlite_home.database.url or ""
    mark_corrupt(url, "database disk image is malformed", "a statement")
    assert json.loads(corruption_marker(url).read_text())["found_by"] == "a statement"  # type: ignore[union-attr]
    assert check_corruption(sqlite_home.database, "test") is None
    assert known_corruption(url) is None


def test_a_restore_clears_the_marker_at_once(sqlite_home: Settings) -> None:
    from orch.backup.create import create_backup
    from orch.backup.restore import restore_backup
    from orch.storage.health import check_corruption

    backup = create_backup(sqlite_home, "manual")
    corrupt_tasks(db_file(sqlite_home))
    assert check_corruption(sqlite_home.database, "test") is not None
    restore_backup(sqlite_home, backup["file"], owner="test")
    assert known_corruption(sqlite_home.database.url or "") is None  # no check needed before the API writes again


def test_detailed_health_keeps_its_components_when_its_counts_meet_the_damage(sqlite_home: Settings) -> None:
    """``/health?detailed=true`` on a damaged file still says which component is down and why: its queue
    and task counts read the damaged pages, and that used to turn the whole answer into a bare 503."""
    settings, db = sqlite_home, db_file(sqlite_home)
    corrupt_tasks(db, pages=6)
    with api_for(settings) as api:
        for offset in (0, 500, 1000):  # a read meets the damage and leaves the marker
            api.client.get("/tasks", params={"limit": 500, "offset": offset}, headers=api.headers("admin"))
        assert known_corruption(settings.database.url or "") is not None

        def answered() -> Any:
            answer = api.client.get("/health", params={"detailed": "true"}, headers=api.headers("admin"))
            body = answer.json()
            return answer.status_code == 503 and body.get("components", {}).get("database", {}).get(
                "status") == "down" and body
        body = wait_until(answered, 30, "the detailed health to report the database down with its components",
                          details=lambda: api.client.get("/health", params={"detailed": "true"},
                                                         headers=api.headers("admin")).text)
        assert body["components"]["database"]["detail"].startswith("database is corrupt: ")
        assert "details" not in body  # the counts could not be read; everything else is still said


BREAK_ROOT = """
import sqlite3, sys
db, table = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db)
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
size = conn.execute("PRAGMA page_size").fetchone()[0]
[root] = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
conn.close()
with open(db, "r+b") as handle:
    handle.seek((root - 1) * size)
    handle.write(bytes((i * 37 + root) % 251 for i in range(size)))
"""


def break_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table``, header included: the table cannot be read at all (in a child
    process, for the reason :func:`corrupt_tasks` gives)."""
    dispose_engines()
    subprocess.run([sys.executable, "-c", BREAK_ROOT, str(db), table], check=True, timeout=60)


def test_the_corrupt_alert_fires_from_the_marker_when_the_alert_tables_are_damaged(sqlite_home: Settings) -> None:
    """The sweep that would store ``database_corrupt`` cannot write (nor read) its row in the damaged file:
    the alert is listed from the marker the first statement to meet the damage left, first found kept."""
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    from orch.monitoring.alerts import list_alerts
    from orch.storage.engine import corruption_record, mark_corrupt, refusing_writes_when_corrupt, session_scope

    settings, db, url = sqlite_home, db_file(sqlite_home), sqlite_home.database.url or ""
    corrupt_tasks(db)
    break_table(db, "alerts")
    with pytest.raises(DatabaseError), session_scope(settings.database) as session:
        session.execute(text("SELECT * FROM tasks")).fetchall()
    found = corruption_record(url)
    assert found is not None and found["found_by"] == "a statement"

    with refusing_writes_when_corrupt():
        firing = list_alerts(settings, state="firing")
    [alert] = [a for a in firing if a["alert_name"] == "database_corrupt"]
    assert (alert["state"], alert["severity"], alert["target"]) == ("firing", "critical", "host")
    assert alert["summary"].startswith(f"database is corrupt: {url}: ") and alert["summary"].endswith(RECOVERY_HINT)
    assert alert["fired_at"] == found["at"]
    assert [a["alert_name"] for a in list_alerts(settings)] == ["database_corrupt"]

    mark_corrupt(url, "On tree page 9 cell 0: damaged", "the monitoring sweep")  # a later check says more
    again = corruption_record(url)
    assert again is not None and (again["found_by"], again["at"]) == ("a statement", found["at"])
    assert again["problem"] == "On tree page 9 cell 0: damaged"


def test_the_corrupt_notice_is_sent_once_then_reminded_after_the_repeat_interval(sqlite_home: Settings) -> None:
    from datetime import timedelta

    from orch.monitoring.alerts import corruption_notice
    from orch.storage.engine import clear_corruption, mark_corrupt
    from orch.storage.types import utcnow

    settings, url = sqlite_home, sqlite_home.database.url or ""
    assert corruption_notice(settings) is None  # sound: nothing to say
    mark_corrupt(url, "database disk image is malformed", "a statement")
    now, repeat = utcnow(), settings.monitoring.alerting.repeat_interval
    first = corruption_notice(settings, now)
    assert first is not None and first.kind == "firing"
    assert (first.alert["alert_name"], first.alert["severity"]) == ("database_corrupt", "critical")
    assert corruption_notice(settings, now) is None
    assert corruption_notice(settings, now + timedelta(seconds=repeat - 1)) is None
    reminder = corruption_notice(settings, now + timedelta(seconds=repeat))
    assert reminder is not None and reminder.kind == "reminder"
    assert clear_corruption(url) and corruption_notice(settings, now + timedelta(seconds=3 * repeat)) is None


def test_monitoring_tasks_do_not_retry_a_damaged_database(prefect_server: str) -> None:
    """Waiting cures a busy database, not a damaged one: the sweep's tasks fail at once on damage."""
    import sqlite3

    from prefect import task

    from tasks import monitoring

    attempts: list[int] = []

    @task(**monitoring.RETRIES)
    def damaged() -> None:
        attempts.append(1)
        raise sqlite3.DatabaseError("database disk image is malformed")

    assert damaged(return_state=True).is_failed()
    assert len(attempts) == 1
    for name in ("store_samples", "evaluate_alerts", "database_metrics", "queue_metrics"):
        assert getattr(monitoring, name).retry_condition_fn is monitoring.retry_unless_corrupt


def test_the_dispatcher_waits_out_recorded_damage_without_stopping(sqlite_home: Settings) -> None:
    import threading

    from orch.dispatch.dispatcher import STOP
    from orch.dispatch.service import wait_out_corruption
    from orch.storage.engine import DatabaseCorrupt, clear_corruption, mark_corrupt

    url = sqlite_home.database.url or ""
    mark_corrupt(url, "database disk image is malformed", "a statement")
    outcome: list[bool] = []
    waiting = threading.Thread(target=lambda: outcome.append(
        wait_out_corruption(url, DatabaseCorrupt(url, "damaged"), poll_seconds=0.02)), daemon=True)
    waiting.start()
    assert waiting.is_alive() and not STOP.is_set()
    clear_corruption(url)
    wait_until(lambda: not waiting.is_alive(), 10, "the dispatcher to resume once the marker is gone")
    assert outcome == [True] and not STOP.is_set()

    mark_corrupt(url, "database disk image is malformed", "a statement")
    try:
        STOP.set()
        assert wait_out_corruption(url, DatabaseCorrupt(url, "damaged"), poll_seconds=0.02) is False
    finally:
        STOP.clear()
