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

import psutil

SCRIPT = textwrap.dedent('''
    import json, subprocess, sys, time
    from pathlib import Path
    from orch.stack.supervisor import Component, Supervisor

    # A "worker" that starts a "flow run" in a new session, prints its pid, then (optionally) exits,
    # leaving the run orphaned.
    worker = (
        "import subprocess, sys, time\\n"
        "run = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True)\\n"
        "print(run.pid, flush=True)\\n"
        "time.sleep(float(sys.argv[1]))\\n"
    )
    log_dir = Path(sys.argv[1])
    sup = Supervisor(log_dir)
    stays = sup.start(Component("stays", [sys.executable, "-c", worker, "300"], {}, log_dir))
    leaves = sup.start(Component("leaves", [sys.executable, "-c", worker, "0.5"], {}, log_dir))
    ignores = sup.start(Component("ignores-term", [sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True);"
        " time.sleep(300)"], {}, log_dir))
    deadline = time.time() + 20
    while time.time() < deadline and not all(
            (log_dir / f"{n}.log").read_text().strip().splitlines()[-1:] and
            not (log_dir / f"{n}.log").read_text().strip().splitlines()[-1].startswith("---")
            for n in ("stays", "leaves", "ignores-term")):
        time.sleep(0.1)
    time.sleep(1.0)  # "leaves" has exited; its run is now an orphan re-parented to us
    exited = [r.component.name for r in sup.exited()]
    runs = [int((log_dir / f"{n}.log").read_text().strip().splitlines()[-1]) for n in ("stays", "leaves")]
    pids = [stays.process.pid, ignores.process.pid, *runs]
    started = time.monotonic()
    left = sup.stop_all(grace=2.0, hard=2.0)
    print(json.dumps({"pids": pids, "exited": exited, "left": left,
                      "seconds": time.monotonic() - started}))
''')


def test_stop_all_takes_new_session_children_orphans_and_stubborn_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exited"] == ["leaves"]
    assert report["left"] == []
    assert report["seconds"] < 5  # SIGTERM, 2 s grace, then SIGKILL for the one that ignores SIGTERM
    alive = [pid for pid in report["pids"] if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_tail_lines_skips_markers_and_blank_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from orch.stack.supervisor import tail_lines

    (tmp_path / "x.log").write_text("\n--- start\nfirst\n\nsecond\nthird\n")
    assert tail_lines(tmp_path / "x.log", 2) == ["second", "third"]
    assert tail_lines(tmp_path / "missing.log", 2) == []
