"""The supervisor stops whole process trees, including processes in new sessions and orphans.

Prefect's process worker starts each flow run with ``start_new_session=True``; these tests build the
same shapes with plain processes. They run the supervisor in a child Python process because it makes
its process a child subreaper, which must not leak into the pytest process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import psutil
    from orch.stack.supervisor import Component, Supervisor, tail_lines
    sys.path.insert(0, sys.argv[2])
    from support import wait_until

    # A "worker" that starts a "flow run" in a new session and prints its pid; then it either stays
    # (saying so when SIGTERM ends it) or exits at once, leaving the run orphaned.
    worker = (
        "import signal, subprocess, sys, time\\n"
        "def stop(*_):\\n"
        "    print('stopped on SIGTERM', flush=True)\\n"
        "    sys.exit(0)\\n"
        "signal.signal(signal.SIGTERM, stop)\\n"
        "run = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True)\\n"
        "print(run.pid, flush=True)\\n"
        "if sys.argv[1] == 'stay':\\n"
        "    time.sleep(300)\\n"
    )
    log_dir = Path(sys.argv[1])
    sup = Supervisor(log_dir)
    stays = sup.start(Component("stays", [sys.executable, "-c", worker, "stay"], {}, log_dir))
    leaves = sup.start(Component("leaves", [sys.executable, "-c", worker, "leave"], {}, log_dir))
    ignores = sup.start(Component("ignores-term", [sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True);"
        " time.sleep(300)"], {}, log_dir))

    def said(name):
        return (tail_lines(log_dir / f"{name}.log", 1) or [""])[-1]

    wait_until(lambda: said("stays").isdigit() and said("ignores-term") == "ready", 60,
               "the workers' run pids and the stubborn one ignoring SIGTERM")
    runs = [int(wait_until(lambda: said(name).isdigit() and said(name), 60, f"{name}'s run pid"))
            for name in ("stays", "leaves")]
    wait_until(lambda: leaves.process.poll() is not None and psutil.Process(runs[1]).ppid() == os.getpid(), 60,
               "'leaves' to exit and its run to be re-parented to the supervisor (an orphan)")
    exited = [r.component.name for r in sup.exited()]
    pids = [stays.process.pid, ignores.process.pid, *runs]
    progress = []
    left = sup.stop_all(grace=5.0, hard=5.0, on_progress=progress.append)
    print(json.dumps({"pids": pids, "exited": exited, "left": left, "progress": progress}))
''')


ORDERED = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from orch.stack.supervisor import Component, Supervisor, tail_lines
    sys.path.insert(0, sys.argv[2])
    from support import wait_until

    # A "client" that stops on SIGTERM (not at once), and a "server" that says, when its own SIGTERM comes,
    # whether the client is still there (its pid is gone once it has ended and been reaped).
    client = ("import signal, sys, time\\n"
              "def stop(*_):\\n"
              "    time.sleep(1)  # takes a moment to stop, as a worker reporting its runs' states does\\n"
              "    print('stopped on SIGTERM', flush=True)\\n"
              "    sys.exit(0)\\n"
              "signal.signal(signal.SIGTERM, stop)\\n"
              "print('ready', flush=True)\\n"
              "time.sleep(300)\\n")
    server = ("import os, signal, sys, time\\n"
              "def stop(*_):\\n"
              "    gone = not os.path.exists(f'/proc/{sys.argv[1]}')\\n"
              "    print('client gone' if gone else 'client still there', flush=True)\\n"
              "    sys.exit(0)\\n"
              "signal.signal(signal.SIGTERM, stop)\\n"
              "print('ready', flush=True)\\n"
              "time.sleep(300)\\n")
    log_dir = Path(sys.argv[1])
    sup = Supervisor(log_dir)
    first = sup.start(Component("client", [sys.executable, "-c", client], {}, log_dir))
    sup.start(Component("server", [sys.executable, "-c", server, str(first.process.pid)], {}, log_dir))
    wait_until(lambda: all(tail_lines(log_dir / f"{name}.log", 1) == ["ready"] for name in ("client", "server")),
               60, "both to handle SIGTERM")
    progress = []
    left = sup.stop_all(grace=30.0, on_progress=progress.append, last=["server"])
    print(json.dumps({"left": left, "progress": progress}))
''')


def running(pid: int) -> bool:
    """Alive and not a zombie; a pid that vanishes while it is looked at is not running."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_all_takes_new_session_children_orphans_and_stubborn_ones(tmp_path: Path) -> None:
    """SIGTERM reaches the whole tree (new sessions and orphans too); only what ignores it is killed.

    Which processes needed SIGKILL is what stop_all reports, and the worker that handles SIGTERM says
    so in its log: a graceful stop is shown by its effects, not by how long it took.
    """
    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(tests)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exited"] == ["leaves"]
    assert report["left"] == []
    stubborn = report["pids"][1]
    assert report["progress"] == ["stopping 4 process(es)",  # both workers' runs, the orphan among them
                                  f"killing 1 process(es) still running after 5 s: ignores-term {stubborn}"]
    assert (tmp_path / "stays.log").read_text().splitlines()[-1] == "stopped on SIGTERM"
    alive = [pid for pid in report["pids"] if running(pid)]
    assert alive == []


def test_stop_all_stops_the_last_ones_after_the_rest(tmp_path: Path) -> None:
    """What ``last`` names (the Prefect server under ``orch up``) is told to stop only once the rest has ended,
    so a worker stopping can still report to it; both stop on SIGTERM, nothing is killed."""
    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", ORDERED, str(tmp_path), str(tests)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"left": [], "progress": ["stopping 2 process(es)"]}
    assert (tmp_path / "client.log").read_text().splitlines()[-1] == "stopped on SIGTERM"
    assert (tmp_path / "server.log").read_text().splitlines()[-1] == "client gone"


def test_tail_lines_skips_markers_and_blank_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from orch.stack.supervisor import tail_lines

    (tmp_path / "x.log").write_text("\n--- start\nfirst\n\nsecond\nthird\n")
    assert tail_lines(tmp_path / "x.log", 2) == ["second", "third"]
    assert tail_lines(tmp_path / "missing.log", 2) == []
