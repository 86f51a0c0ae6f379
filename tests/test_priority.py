"""``orch up`` runs the worker and its Prefect server below the API's CPU priority: every thread, threads
made later, and the session's autogroup.

Each case runs in a child Python started in a session of its own, as ``orch up`` starts its components,
so that neither the nice values nor the autogroup of the pytest process are touched.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orch.stack.priority import AUTOGROUP
from orch.stack.supervisor import _child_setup

ROOT = Path(__file__).resolve().parent.parent
CHILD = textwrap.dedent('''
    import json, os, sys, threading
    from pathlib import Path
    from orch.stack.priority import AUTOGROUP, lower_own_priority

    def seen():
        tasks = Path("/proc/self/task")
        return {"threads": sorted(os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks.iterdir()),
                "autogroup": AUTOGROUP.read_text().split()[-1] if AUTOGROUP.exists() else None}

    stop = threading.Event()
    before = threading.Thread(target=stop.wait)  # a thread that exists before: the import-time threads
    before.start()
    out = {"start": seen()}
    lower_own_priority(int(sys.argv[1]))
    after = threading.Thread(target=stop.wait)  # and one made after: the task threads
    after.start()
    out["lowered"] = seen()
    lower_own_priority(int(sys.argv[2]))  # asked again, for a higher priority: refused in silence
    out["again"] = seen()
    stop.set()
    print(json.dumps(out))
''')


def run_child(first: int, second: int, start_nice: int = 0) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(first), str(second)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, start_new_session=True,
                          preexec_fn=(lambda: os.nice(start_nice)) if start_nice else None)  # noqa: PLW1509
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


STARTED = textwrap.dedent('''
    import json, os, threading
    from pathlib import Path
    stop = threading.Event()
    made = threading.Thread(target=stop.wait)  # a thread the program makes, as the worker's task threads
    made.start()
    tasks = Path("/proc/self/task")
    print(json.dumps({"threads": sorted(os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks.iterdir()),
                      "autogroup": Path("/proc/self/autogroup").read_text().split()[-1]
                      if Path("/proc/self/autogroup").exists() else None}))
    stop.set()
''')


def autogroup(nice: int) -> str | None:
    """What the child's autogroup should read: None on a kernel without autogroups (nothing to lower)."""
    return str(nice) if AUTOGROUP.exists() else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and autogroups are Linux's")
@pytest.mark.parametrize("nice", [0, 10])
def test_a_component_starts_at_its_nice_with_every_thread_and_its_session(nice: int) -> None:
    """What the supervisor runs in the child before ``exec`` reaches the program and the threads it makes."""
    done = subprocess.run([sys.executable, "-c", STARTED], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          start_new_session=True, preexec_fn=functools.partial(_child_setup, nice))  # noqa: PLW1509
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"threads": [nice, nice], "autogroup": autogroup(nice)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and autogroups are Linux's")
def test_every_thread_and_the_session_are_lowered_and_never_raised_again() -> None:
    seen = run_child(7, 3)
    assert seen["start"] == {"threads": [0, 0], "autogroup": autogroup(0)}
    # Three threads: the main one, the one from before and the one made after, all at 7.
    assert seen["lowered"] == {"threads": [7, 7, 7], "autogroup": autogroup(7)}
    assert seen["again"] == seen["lowered"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and autogroups are Linux's")
def test_zero_leaves_the_priority_and_a_lower_one_is_kept() -> None:
    assert run_child(0, 0)["again"] == {"threads": [0, 0, 0], "autogroup": autogroup(0)}
    # Started at nice 15 (`nice -n 15 orch up`): asking for 10 keeps 15 (root could raise it; nothing does).
    kept = run_child(10, 10, start_nice=15)
    assert kept["lowered"]["threads"] == [15, 15, 15]


WAITING = textwrap.dedent('''
    import json, os, sys, threading
    from pathlib import Path
    stop = threading.Event()
    made = threading.Thread(target=stop.wait)
    made.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the test has restored the priority
    tasks = Path("/proc/self/task")
    print(json.dumps({"threads": sorted(os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks.iterdir()),
                      "autogroup": Path("/proc/self/autogroup").read_text().split()[-1]
                      if Path("/proc/self/autogroup").exists() else None}), flush=True)
    stop.set()
''')


def restored_child(restore: Callable[[int], None]) -> dict[str, Any]:
    """A child started as the supervisor starts a component (nice 10, a session of its own), given to
    ``restore`` while it waits; its threads' and autogroup's nice as it then sees them."""
    child = subprocess.Popen([sys.executable, "-c", WAITING], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=functools.partial(_child_setup, 10))  # noqa: PLW1509
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        restore(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())  # type: ignore[no-any-return]
    finally:
        child.kill()
        child.wait(timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and autogroups are Linux's")
def test_a_stop_gives_a_lowered_component_the_supervisors_priority_back_where_allowed() -> None:
    """On a busy machine a Prefect server at nice 10 once needed more than the 7 s grace to stop. Before
    SIGTERM the supervisor restores its own priority to each process: with privilege (root here, as a
    system service) every thread and the session are back at it; without, nothing changes and nothing fails."""
    from orch.stack.priority import restore_priority

    seen = restored_child(restore_priority)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    expected = mine if os.geteuid() == 0 else 10
    assert seen == {"threads": [expected, expected], "autogroup": autogroup(expected)}


ROOT_GROUP = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from orch.stack import priority
    priority.AUTOGROUP = Path(sys.argv[1])  # what the kernel shows a process in the root group: nothing
    priority.lower_own_priority(5)
    print(json.dumps(sorted(os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in Path("/proc/self/task").iterdir())))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and autogroups are Linux's")
def test_a_process_in_no_autogroup_of_its_own_is_lowered_and_restored(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose session was never made since boot (as a CI runner's) is in the root group, and the
    kernel shows it an empty ``/proc/self/autogroup``. A stop then failed on every ``orch up`` with an
    IndexError from reading it; lowering did too. Now its threads are lowered, and a stop restores a
    child's autogroup to the root group's weight, nice 0."""
    from orch.stack import priority

    empty = tmp_path / "autogroup"
    empty.write_text("", encoding="ascii")
    lowered = subprocess.run([sys.executable, "-c", ROOT_GROUP, str(empty)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, start_new_session=True)
    assert lowered.returncode == 0, lowered.stderr
    assert json.loads(lowered.stdout) == [5]

    monkeypatch.setattr(priority, "AUTOGROUP", empty)  # the supervisor's own group: the root one
    seen = restored_child(priority.restore_priority)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    expected = (mine, "0") if os.geteuid() == 0 else (10, "10")
    assert (seen["threads"], seen["autogroup"]) == ([expected[0]] * 2, expected[1] if AUTOGROUP.exists() else None)
