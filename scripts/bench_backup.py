"""Backup and restore of a large ORCH database: ORCH's verified backup against the naive baseline.

Generates (or reuses, ``--db``) a SQLite ORCH database of about 1 GB: ``--tasks`` finished tasks (1 M by
default) with their three events each, written with plain ``sqlite3`` executemany in big transactions.
Then, in one run:

- ORCH backup (``orch backup create``'s code): online snapshot, integrity check, great_expectations
  suite, gzip + SHA-256, atomic publish and catalog entry; timed per step;
- the baseline: ``sqlite3 src.db ".backup tmp.db" && gzip -1 tmp.db`` (no verification at all);
- ORCH restore of that backup (``orch backup restore latest``'s code): checksum, gunzip, integrity check,
  the suite, pre-restore copy, swap, post-check; timed per phase.

Writes ``bench_results/bench_backup.{json,md}``. Goals (issue 6): backup within 1.5x the baseline with
verification included; restore of 1 GB including validation under 60 s; the database for 1 M tasks under
the original system's 10 GB bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import BenchError, clean_environ, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results"
STATUSES = ("completed", "completed", "completed", "failed")


def generate(path: Path, tasks: int, result_bytes: int) -> float:
    """An ORCH database at the current schema holding ``tasks`` finished tasks and 3 events each."""
    from orch.config.schema import DatabaseSettings
    from orch.storage.engine import dispose_engines
    from orch.storage.migrate import upgrade

    started = time.monotonic()
    upgrade(DatabaseSettings(url=f"sqlite:///{path}"), create_database=True)
    dispose_engines()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    output = json.dumps({"stdout": "x" * result_bytes, "exit_code": 0})
    base = time.time() - tasks  # one task per second of history
    batch = 20000
    for start in range(0, tasks, batch):
        rows, events = [], []
        for i in range(start, min(tasks, start + batch)):
            task_id = f"{i:08x}-0000-4000-8000-{i:012x}"
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + i)) + ".000000"
            status = STATUSES[i % len(STATUSES)]
            rows.append((task_id, f"WORK_AI_{i % 8:02d}", "shell", '{"argv": ["/usr/bin/df", "-h"]}', i % 4, 300, 0,
                         '{"source": "bench", "user_id": "ops", "tags": ["nightly"]}', "bench", None, 2, "[]",
                         base + i - (i % 4) * 60, None, None, status, 1, output if status == "completed" else None,
                         None if status == "completed" else "exit 1", created, created, created, created))
            events += [(task_id, "task.created", created, '{"core_id": "WORK_AI_00", "action": "shell"}'),
                       (task_id, "task.started", created, '{"attempt": 1, "dispatcher": "bench"}'),
                       (task_id, f"task.{status}", created, '{"attempt": 1, "duration_seconds": 0.1}')]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tasks (task_id, core_id, action, params, priority, timeout, stay, metadata, owner, "
            "idempotency_key, max_retries, locks, sort_key, lease_owner, lease_expires_at, status, attempts, "
            "result, error, created_at, started_at, finished_at, updated_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO task_events (task_id, event_type, timestamp, data) VALUES (?, ?, ?, ?)", events)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - started


def baseline(source: Path, work: Path) -> dict[str, float]:
    """``sqlite3 src.db ".backup tmp.db" && gzip -1 tmp.db``, timed as one command."""
    if not shutil.which("sqlite3") or not shutil.which("gzip"):
        raise BenchError("the baseline needs the sqlite3 and gzip commands (apt-get install sqlite3)")
    target = work / "baseline.db"
    started = time.monotonic()
    subprocess.run(["sqlite3", str(source), f".backup {target}"], check=True)
    subprocess.run(["gzip", "-1", str(target)], check=True)
    seconds = time.monotonic() - started
    size = (work / "baseline.db.gz").stat().st_size
    (work / "baseline.db.gz").unlink()
    return {"seconds": round(seconds, 2), "compressed_bytes": size}


def orch_backup(settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from orch.backup import create
    from orch.backup.guard import database_lock

    times = {}
    started = time.monotonic()
    with database_lock(settings, "bench"):
        create.sweep_partials(settings)
        t = time.monotonic()
        snap = create.snapshot(settings, "manual")
        times["snapshot"] = time.monotonic() - t
        t = time.monotonic()
        entry = create.verify(settings, snap)
        times["verify (integrity, suite, gzip + sha256)"] = time.monotonic() - t
        t = time.monotonic()
        create.publish(settings, snap, entry)
        times["publish"] = time.monotonic() - t
    total = time.monotonic() - started
    return {"seconds": round(total, 2), "steps": {k: round(v, 2) for k, v in times.items()},
            "compressed_bytes": entry["size_bytes"], "expectations": entry["validation"]["evaluated"],
            "file": entry["file"]}


def orch_restore(settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from orch.backup import restore

    started = time.monotonic()
    candidate = restore.check(settings, "latest", migrate=True)
    checked = time.monotonic() - started
    try:
        report = restore.swap(settings, candidate, "bench")
    finally:
        restore.discard(candidate)
    total = time.monotonic() - started
    steps = {"check (sha256, gunzip, integrity, suite)": round(checked, 2),
             "swap (pre-restore copy, swap, post-check)": round(total - checked, 2)}
    return {"seconds": round(total, 2), "steps": steps,
            "restored_tasks": report["row_counts"].get("tasks")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--result-bytes", type=int, default=620, help="captured output per completed task")
    parser.add_argument("--db", type=Path, help="reuse this generated database (it is restored into: a copy)")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    os.environ.clear()
    os.environ.update(clean_environ())
    work = args.work or Path(tempfile.mkdtemp(prefix="orch-bench-backup-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "orch.db"
        generated = None
        if args.db:
            shutil.copy2(args.db, source)
        elif not source.exists():
            print(f"generating {args.tasks:,} tasks into {source} ...", flush=True)
            generated = round(generate(source, args.tasks, args.result_bytes), 1)
        db_bytes = source.stat().st_size
        print(f"database: {db_bytes / 2**30:.2f} GiB", flush=True)

        from orch.config.loader import load_settings

        settings = load_settings(environ={"ORCH_HOME": str(work), "DATABASE_URL": f"sqlite:///{source}",
                                          "ORCH_DATA_DIR": str(work / "data")}, generate_secrets=False)
        settings.database.timeout = 120
        t = time.monotonic()
        import great_expectations  # noqa: F401 - imported once, like the worker that runs every backup

        ge_import = round(time.monotonic() - t, 2)
        print("baseline ...", flush=True)
        base = baseline(source, work)
        print(f"  {base['seconds']} s", flush=True)
        print("ORCH backup ...", flush=True)
        backup = orch_backup(settings)
        print(f"  {backup['seconds']} s {backup['steps']}", flush=True)
        print("ORCH restore ...", flush=True)
        restored = orch_restore(settings)
        print(f"  {restored['seconds']} s {restored['steps']}", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    ratio = round(backup["seconds"] / base["seconds"], 2)
    result = {
        "machine": machine_info(), "tasks": args.tasks, "database_bytes": db_bytes, "generate_seconds": generated,
        "great_expectations_import_seconds": ge_import, "baseline": base, "orch_backup": backup,
        "orch_restore": restored, "ratio_to_baseline": ratio,
        "throughput_mb_s": {"orch_backup": round(db_bytes / 2**20 / backup["seconds"], 1),
                            "baseline": round(db_bytes / 2**20 / base["seconds"], 1)},
        "goals": {"backup within 1.5x baseline": ratio <= 1.5,
                  "restore under 60 s": restored["seconds"] < 60,
                  "database for 1M tasks under 10 GB": db_bytes * 1_000_000 / args.tasks < 10 * 10**9},
        "rpo": "24 h (daily backup at 02:00 UTC; a manual or extra scheduled run shortens it)",
        "rto_seconds": restored["seconds"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_backup.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench_backup.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    m = r["machine"]
    lines = [f"{m['cpu_count']} CPUs, Python {m['python']}, {m['timestamp']}, load average at start "
             f"{m['load_avg_1m']}. Database: {r['tasks']:,} tasks, {r['database_bytes'] / 2**30:.2f} GiB "
             f"({r['database_bytes']:,} bytes).", "",
             "| figure | ORCH (verified) | baseline `sqlite3 .backup && gzip -1` |", "|---|---|---|",
             f"| backup time (s) | {r['orch_backup']['seconds']} | {r['baseline']['seconds']} |",
             f"| throughput (MiB/s of database) | {r['throughput_mb_s']['orch_backup']} | "
             f"{r['throughput_mb_s']['baseline']} |",
             f"| compressed size (MiB) | {r['orch_backup']['compressed_bytes'] / 2**20:.1f} | "
             f"{r['baseline']['compressed_bytes'] / 2**20:.1f} |",
             f"| verification | integrity check + {r['orch_backup']['expectations']} expectations + sha256 | none |",
             f"| restore incl. validation (s) = RTO | {r['orch_restore']['seconds']} | – |", "",
             "Backup steps (s): " + ", ".join(f"{k} {v}" for k, v in r["orch_backup"]["steps"].items()),
             "Restore steps (s): " + ", ".join(f"{k} {v}" for k, v in r["orch_restore"]["steps"].items()),
             f"great_expectations import (once per worker process, not in the times above): "
             f"{r['great_expectations_import_seconds']} s", "",
             "Goals:"]
    lines += [f"- {goal}: {'PASS' if ok else 'FAIL'}" for goal, ok in r["goals"].items()]
    lines += [f"- ratio to baseline: {r['ratio_to_baseline']}x; RPO {r['rpo']}; RTO {r['rto_seconds']} s"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
