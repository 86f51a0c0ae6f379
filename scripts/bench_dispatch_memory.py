"""Dispatcher memory benchmark (issue 17): does the worker's dispatcher grow with the tasks it has run?

Why it exists: one ``dispatch`` flow run lasts an hour, and Prefect keeps entries for every task run submitted
in a flow run until it ends (a cancel event, the final state's links, the task's assets); at 100 tasks/s that
was over 1 GB an hour. The dispatcher now drops them once a task run is final
(orch/dispatch/prefect_entries.py). This measures it where it matters, the RSS of a real dispatcher process
(``python -m orch.dispatch.service``, the dispatcher of ORCH's worker) after 2,000 and after 10,000 no-op
tasks, all in one ``dispatch`` flow run, against a real Prefect server (tuned as ``orch up`` tunes its own,
one per variant).

Baseline in the same run: the same dispatcher with the drop switched off (``forget_task_run`` replaced by a
no-op in that process only), then the dispatcher as it is; each on a fresh SQLite ORCH database. Figures on
a shared 2-core machine are noisy: compare the two rows of one run, never across runs.

Usage: ``.venv/bin/python scripts/bench_dispatch_memory.py [--quick] [--out DIR]``. Progress goes to stderr,
the markdown table to stdout and ``<out>/bench_dispatch_memory.md``, every figure to
``<out>/bench_dispatch_memory.json``. ``--quick`` is a smoke run (200 and 1,000 tasks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import BenchError, run_bench
from bench_common import machine_info as _machine_info
from bench_dispatch import TERMINAL, Dispatcher, OrchDb, Prefect, Processes, say, wait_until

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CORES = 64  # the tasks are spread over this many cores, so the dispatcher's concurrency (16) is the limit
BATCH = 500  # enqueued this many at a time
TASKS_PER_S_FLOOR = 5.0  # a deadline, not a goal: the wait for N tasks gives up after N / this seconds
# The baseline: the dispatcher service as ``python -m orch.dispatch.service`` runs it, without the drop.
KEEP_ENTRIES = ("import runpy\nimport orch.dispatch.dispatcher as dispatcher\n"
                "dispatcher.forget_task_run = lambda _task_run_id: None\n"
                "runpy.run_module('orch.dispatch.service', run_name='__main__', alter_sys=True)\n")
VARIANTS = {"before (entries kept)": [sys.executable, "-c", KEEP_ENTRIES],
            "after (entries dropped)": [sys.executable, "-m", "orch.dispatch.service"]}


def finished(db: OrchDb) -> int:
    return sum(count for status, count in db.counts().items() if status in TERMINAL)


def run_variant(workdir: Path, name: str, argv: list[str], checkpoints: list[int],
                procs: Processes) -> dict[str, Any]:
    """One dispatcher process: RSS once idle, then after each checkpoint's count of tasks has finished.

    Each with its own Prefect server and ORCH database: what the server still has to record of the first
    variant's tasks (a backlog of minutes on a loaded machine) must not slow the second down."""
    label = name.split()[0]
    prefect = Prefect(workdir / f"prefect-{label}", procs)
    prefect.home.mkdir()
    prefect.start()
    db = OrchDb(workdir / label)
    dispatcher = Dispatcher(db, prefect, procs)
    dispatcher.process = procs.spawn("dispatcher", argv, dispatcher.env, PROJECT_ROOT)
    log = procs.log("dispatcher")
    try:
        wait_until(lambda: _claims_ready(prefect), 300, "the dispatch flow run Running", dispatcher.alive, log)
        idle = dispatcher.usage()
        rows: list[dict[str, Any]] = [{"tasks": 0, **idle}]
        say(f"{name}: idle RSS {idle['rss_mb']:.1f} MB")
        submitted = 0
        began = time.monotonic()
        for target in checkpoints:
            for start in range(submitted, target, BATCH):
                db.submit_many(range(start, min(target, start + BATCH)), CORES)
            submitted = target
            wait_until(lambda target=target: finished(db) >= target, target / TASKS_PER_S_FLOOR,
                       f"{target} tasks finished", dispatcher.alive, log, interval=0.5)
            usage = dispatcher.usage()
            rows.append({"tasks": target, **usage, "elapsed_s": round(time.monotonic() - began, 1)})
            say(f"{name}: after {target:,} tasks RSS {usage['rss_mb']:.1f} MB ({rows[-1]['elapsed_s']} s)")
        statuses = db.counts()
        if statuses.get("completed", 0) != checkpoints[-1]:
            raise BenchError(f"{name}: not every task completed: {statuses}", [])
    finally:
        procs.stop("dispatcher")
        procs.stop("prefect-server")
        db.close()
    first, last = rows[1], rows[-1]
    per_task_kb = (last["rss_mb"] - first["rss_mb"]) * 1024 / (last["tasks"] - first["tasks"])
    return {"rows": rows, "growth_per_task_kb": round(per_task_kb, 2),
            "tasks_per_s": round(last["tasks"] / last["elapsed_s"], 1)}


def _claims_ready(prefect: Prefect) -> bool:
    """The dispatcher's ``dispatch`` flow run is Running: it claims from here on."""
    runs = prefect.post("/flow_runs/filter", {"flows": {"name": {"any_": ["dispatch"]}},
                                              "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}})
    return bool(runs)


def bench(workdir: Path, checkpoints: list[int]) -> dict[str, Any]:
    procs = Processes(workdir)
    report: dict[str, Any] = {"machine": _machine_info(), "checkpoints": checkpoints, "cores": CORES,
                              "variants": {}}
    try:
        for name, argv in VARIANTS.items():
            report["variants"][name] = run_variant(workdir, name, argv, checkpoints, procs)
    finally:
        procs.stop_all()
    return report


def markdown(report: dict[str, Any]) -> str:
    checkpoints = report["checkpoints"]
    head = ["dispatcher", "idle", *(f"after {n:,} tasks" for n in checkpoints), "growth per task", "tasks/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, result in report["variants"].items():
        cells = [name, *(f"{row['rss_mb']:.1f} MB" for row in result["rows"]),
                 f"{result['growth_per_task_kb']:.2f} KB", f"{result['tasks_per_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    machine = report["machine"]
    return "\n".join([
        f"Dispatcher RSS (`python -m orch.dispatch.service`, one `dispatch` flow run, no-op tasks over "
        f"{report['cores']} cores), {machine['timestamp']}, {machine['cpu_count']} cores, load "
        f"{machine['load_avg_1m']}, Prefect {machine['prefect']}; growth per task between the first and the "
        f"last checkpoint; total {report.get('total_s', '?')} s.", "", *lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 and 1,000 tasks")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench_results")
    args = parser.parse_args()
    checkpoints = [200, 1_000] if args.quick else [2_000, 10_000]

    def write(report: dict[str, Any]) -> str:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_dispatch_memory.json").write_text(json.dumps(report, indent=2) + "\n")
        table = markdown(report)
        (args.out / "bench_dispatch_memory.md").write_text(table)
        return table

    return run_bench("orch-bench-memory-", lambda workdir: bench(workdir, checkpoints), write)


if __name__ == "__main__":
    sys.exit(main())
