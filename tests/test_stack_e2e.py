"""``orch up`` end to end: a real Prefect server, worker, deployments and API, started and stopped the
way an operator does it, twice over the same data directory.

A clean stop is judged by what ``orch up`` says and leaves behind (exit 0, no process it had to kill
after the grace, no orphans), not by a stopwatch: a loaded machine is slower, not wrong."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from support import BIN, answers_200, free_port, prefect_auth, run_orch, wait_until

from orch.stack.prefect_template import template_path
from orch.stack.priority import AUTOGROUP

UP_TIMEOUT = 150


@dataclass
class Stack:
    process: subprocess.Popen[str]
    home: Path
    env: dict[str, str]
    prefect_api: str
    orch_api: str
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _pump: threading.Thread | None = None

    @property
    def prefect_auth_string(self) -> str:
        """The string its Prefect server requires: the one given to `orch up`, else the one it generated."""
        given = self.env.get("PREFECT_API_AUTH_STRING")
        return given or json.loads((self.home / "data" / "secrets.json").read_text())["prefect_auth_string"]

    @property
    def prefect(self) -> dict[str, str]:
        return prefect_auth(self.prefect_auth_string)

    def read_until(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("orch up exited early:\n" + "".join(self.lines))
            if marker in line:
                return
        raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(self.lines))

    def stop(self, timeout: float = 90) -> str:
        """SIGTERM, as Ctrl-C does; everything ``orch up`` printed, once it has exited and said it all.

        ``timeout`` only bounds a hang. Whether the stop was clean is read from the output
        (:func:`assert_stopped_cleanly`), never from how long it took.
        """
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        assert self._pump is not None
        self._pump.join(timeout)  # its last lines may still be in the pipe when the process has exited
        assert not self._pump.is_alive(), "orch up exited but its output never ended"
        return "".join(self.lines)


def assert_stopped_cleanly(stack: Stack, output: str) -> None:
    """Exit 0, and every process ended on SIGTERM within the supervisor's grace: none had to be killed."""
    assert stack.process.returncode == 0, output
    assert not re.search(r"^killing \d+ process\(es\) still running", output, re.MULTILINE), output
    assert re.search(r"^stopping \d+ process\(es\)\nstopped in \d+\.\d s\n\Z", output, re.MULTILINE), output


def assert_supervisor_is_small(stack: Stack) -> None:
    """After its checks `orch up` becomes the supervisor (same pid, ``exec``): no extension module of
    pydantic, SQLAlchemy or orjson is mapped in it, so none of them (nor Prefect, which needs pydantic) is
    resident for the stack's lifetime (what it imports: tests/test_startup_imports.py)."""
    supervisor = psutil.Process(stack.process.pid)
    assert supervisor.cmdline()[1:4] == ["-m", "orch.stack.up", "--plan-fd"], supervisor.cmdline()
    heavy = sorted({m.path for m in supervisor.memory_maps()
                    if any(f"/site-packages/{name}/" in m.path for name in ("pydantic_core", "sqlalchemy", "orjson"))})
    assert heavy == []


def stack_env(home: Path, prefect_port: int, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ORCH_"))}
    env.update(ORCH_HOME=str(home), PREFECT_SERVER_API_PORT=str(prefect_port), ORCH_PORT=str(api_port),
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               # the scheduler's loop (default 60 s) is what turns schedules into runs; shorter here only
               # so the test sees it happen without waiting a minute
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5")
    return env


@contextmanager
def orch_up(home: Path, prefect_port: int, api_port: int, **extra_env: str) -> Iterator[Stack]:
    env = {**stack_env(home, prefect_port, api_port), **extra_env}
    process = subprocess.Popen([str(BIN / "orch"), "up"], cwd=home, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    prefect_api = env.get("PREFECT_API_URL", f"http://127.0.0.1:{prefect_port}/api")
    stack = Stack(process, home, env, prefect_api, f"http://127.0.0.1:{api_port}")

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.lines.append(line)
            stack._queue.put(line)
        stack._queue.put(None)

    stack._pump = threading.Thread(target=pump, daemon=True)
    stack._pump.start()
    try:
        yield stack
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def priorities(proc: psutil.Process) -> tuple[set[int], str | None]:
    """The nice values of a process's threads, and its autogroup's (None on a kernel without autogroups)."""
    autogroup = Path(f"/proc/{proc.pid}/autogroup")
    return ({os.getpriority(os.PRIO_PROCESS, thread.id) for thread in proc.threads()},
            autogroup.read_text().split()[-1] if autogroup.exists() else None)


def commands(pid: int) -> list[tuple[psutil.Process, str]]:
    """Each descendant with its command line; one that exits while it is read (``deployments``) is left out."""
    found = []
    for proc in descendants(pid):
        with contextlib.suppress(psutil.Error):
            found.append((proc, " ".join(proc.cmdline())))
    return found


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie; a process that ends while it is looked at is not running."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def deployment(stack: Stack, name: str) -> dict:
    found = httpx.post(f"{stack.prefect_api}/deployments/filter",
                       json={"deployments": {"name": {"any_": [name]}}}, headers=stack.prefect, timeout=10).json()
    assert len(found) == 1, found
    return found[0]


def run_db_health(stack: Stack) -> str:
    """``prefect deployment run`` as an operator types it; returns the flow run's id."""
    env = {**stack.env, "PREFECT_API_URL": stack.prefect_api, "PREFECT_API_AUTH_STRING": stack.prefect_auth_string}
    result = subprocess.run([str(BIN / "prefect"), "deployment", "run", "db-health/hourly", "--watch",
                             "--watch-timeout", "90"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = httpx.post(f"{stack.prefect_api}/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment(stack, "hourly")["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "EXPECTED_START_TIME_DESC", "limit": 1}, headers=stack.prefect, timeout=10).json()
    assert run["state"]["type"] == "COMPLETED"
    return str(run["id"])


def run_in_process(stack: Stack, deployment_id: str) -> dict:
    """Run a deployment of the ``orch-inprocess`` pool; the run must execute inside the worker process."""
    answers: list[httpx.Response] = []

    def created() -> dict | None:
        """The new run; a 5xx (Prefect's SQLite busy on a loaded machine, seen once in CI) is asked again."""
        answer = httpx.post(f"{stack.prefect_api}/deployments/{deployment_id}/create_flow_run", json={},
                            headers=stack.prefect, timeout=10)
        answers.append(answer)
        if answer.status_code >= 500:
            return None
        assert answer.status_code == 201, f"create_flow_run answered {answer.status_code}: {answer.text[:500]}"
        return dict(answer.json())

    run = wait_until(created, 120, "Prefect to create the flow run",
                     details=lambda: answers[-1].text[:500] if answers else "no answer yet")

    def final() -> dict | None:
        found = httpx.get(f"{stack.prefect_api}/flow_runs/{run['id']}", headers=stack.prefect, timeout=10).json()
        return dict(found) if found["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    found = wait_until(final, 120, f"flow run {run['id']} to finish")
    assert found["infrastructure_pid"] == f"orch-inprocess:{socket.gethostname()}", found
    return found


def flow_runs(stack: Stack, **criteria: object) -> list[dict]:
    return list(httpx.post(f"{stack.prefect_api}/flow_runs/filter", json=criteria, headers=stack.prefect,
                           timeout=10).json())


def dispatch_run(stack: Stack) -> dict:
    """This stack's ``dispatch`` flow run, Running: the one labelled with its worker's pid (flows/dispatch.py)."""
    [worker] = [p for p, command in commands(stack.process.pid) if "orch.stack.worker" in command]
    executor = f"{socket.gethostname()}:{worker.pid}:"

    def found() -> dict | None:
        running = flow_runs(stack, flows={"name": {"any_": ["dispatch"]}},
                            flow_runs={"state": {"type": {"any_": ["RUNNING"]}}})
        return next((r for r in running if r["labels"].get("orch.executor", "").startswith(executor)), None)

    return wait_until(found, 60, "the stack's dispatch run to be Running")


def assert_reported_stopped(stack: Stack, run_id: str) -> None:
    """A dispatch run ended by a stop says so, Completed: not left Running, nor crashed by a zombie sweep."""
    state = httpx.get(f"{stack.prefect_api}/flow_runs/{run_id}", headers=stack.prefect, timeout=10).json()["state"]
    assert state["type"] == "COMPLETED", state
    assert state["message"].startswith("the ORCH stack stopped: "), state


def start_long_task(home: Path) -> str:
    """A task still running when the stack stops: it must be handed back, not waited for."""
    queued = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "sleep", "--param", "seconds=600",
                      env={"ORCH_HOME": str(home)}, timeout=60)
    assert queued.returncode == 0, queued.stderr
    task_id = str(json.loads(queued.stdout)["task_id"])

    def status() -> str:
        return str(json.loads(run_orch("tasks", "show", task_id, env={"ORCH_HOME": str(home)}).stdout)["status"])

    wait_until(lambda: status() == "running", 120, f"task {task_id} to run")
    return task_id


def scheduled_runs(stack: Stack, deployment_id: str) -> list[dict]:
    return list(httpx.post(f"{stack.prefect_api}/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}, headers=stack.prefect, timeout=10).json())


@pytest.mark.slow
@pytest.mark.timeout(900)  # two stack starts and a deployment run: 110 s idle, 300 s+ on a loaded machine
def test_orch_up_runs_everything_stops_clean_and_keeps_data(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    home.mkdir()
    prefect_port, api_port = free_port(), free_port()

    with orch_up(home, prefect_port, api_port) as stack:
        stack.read_until("Press Ctrl-C to stop.", UP_TIMEOUT)
        assert_supervisor_is_small(stack)
        output = "".join(stack.lines)
        assert f"Prefect UI:   http://127.0.0.1:{prefect_port}" in output
        # `make install` made this environment's template: the new Prefect database is a copy of it, and
        # everything below (deployments, schedules, runs, history kept over a restart) runs on that copy.
        seeded = f"Prefect database {home / 'data' / 'prefect' / 'prefect.db'}: created from {template_path().name}"
        assert (seeded in output) == template_path().is_file(), output
        assert f"(docs: http://127.0.0.1:{api_port}/docs)" in output

        health = httpx.get(f"{stack.orch_api}/health", timeout=10).json()
        assert health["status"] == "ok", health
        assert httpx.get(f"{stack.orch_api}/docs", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/", timeout=10).status_code == 200  # the UI
        # Prefect's API is closed to whoever lacks the generated auth string; everything above used it.
        assert httpx.post(f"{stack.prefect_api}/deployments/filter", json={}, timeout=10).status_code == 401
        assert httpx.post(f"{stack.prefect_api}/block_documents/filter", json={"include_secrets": True},
                          timeout=10).status_code == 401

        hourly = deployment(stack, "hourly")
        assert hourly["work_pool_name"] == "orch-process"
        assert [s["schedule"]["cron"] for s in hourly["schedules"] if s["active"]] == ["0 * * * *"]
        host_queue = f"host-{socket.gethostname()[:64] or 'localhost'}"  # this host's sweep and queue
        sweep = deployment(stack, host_queue)
        assert sweep["work_queue_name"] == host_queue
        assert sweep["work_pool_name"] == deployment(stack, "auto")["work_pool_name"] == "orch-inprocess"
        assert run_in_process(stack, sweep["id"])["state"]["type"] == "COMPLETED"  # in the worker's process

        api = next(p for p, command in commands(stack.process.pid) if "orch.api.server" in command)
        worker = next(p for p, command in commands(stack.process.pid) if "orch.stack.worker" in command)
        server = next(p for p, command in commands(stack.process.pid) if "prefect_cli server start" in command)
        # The worker and its Prefect server run below the API (dispatch.execution_nice): every thread, and
        # each one's session (a kernel without autogroups has only the threads' values).
        grouped = AUTOGROUP.exists()
        assert priorities(worker) == priorities(server) == ({10}, "10" if grouped else None), priorities(worker)
        assert priorities(api) == ({0}, "0" if grouped else None), priorities(api)
        api.kill()  # a component that dies is restarted, and says so
        stack.read_until("api exited with code -9", 60)
        wait_until(lambda: answers_200(f"{stack.orch_api}/healthz"), 120, "the restarted API to answer")

        first_run = run_db_health(stack)
        dispatched = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", "--wait",
                              env={"ORCH_HOME": str(home)}, timeout=120)
        assert dispatched.returncode == 0, dispatched.stderr
        assert '"status": "completed"' in dispatched.stdout  # the stack's dispatcher ran it
        chained = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "run-deployment",
                           "--param", "name=db-health/hourly", "--wait", env={"ORCH_HOME": str(home)}, timeout=180)
        assert chained.returncode == 0, chained.stdout + chained.stderr
        assert '"state": "COMPLETED"' in chained.stdout  # a task that ran a deployment, through the worker
        wait_until(lambda: scheduled_runs(stack, hourly["id"]), 120, "the hourly schedule to produce runs")
        long_task = start_long_task(home)
        first_dispatch = dispatch_run(stack)["id"]
        first_runs = {run["id"] for run in flow_runs(stack)}
        tree = descendants(stack.process.pid)
        assert len(tree) >= 3
        assert_stopped_cleanly(stack, stack.stop())  # with a task running: handed back, not waited for
        left = [p for p in tree if running(p)]
        assert left == [], f"orphans: {left}"

    secrets_before = (home / "data" / "secrets.json").read_text()
    made = run_orch("user", "create-admin", "--username", "keeper", "--password-stdin",
                    input="Keep-All-Data-42!\n", env={"ORCH_HOME": str(home)})
    assert made.returncode == 0, made.stderr

    with orch_up(home, prefect_port, api_port) as stack:
        stack.read_until("Press Ctrl-C to stop.", UP_TIMEOUT)
        # Nothing changed and the server kept it all: the applier checked and skipped (deployments/applied.py).
        assert "Prefect database" not in "".join(stack.lines)  # its own, kept: never replaced by the template
        applier = (home / "data" / "logs" / "deployments.log").read_text().split("starting deployments")
        assert "\napplying: first apply\n" in applier[1] and "\napplied: " in applier[1], applier[1]
        assert "\nunchanged since " in applier[2] and "\napplied: " not in applier[2], applier[2]
        run = httpx.get(f"{stack.prefect_api}/flow_runs/{first_run}", headers=stack.prefect, timeout=10).json()
        assert run["state"]["type"] == "COMPLETED"  # Prefect's history survived the restart
        # The first stop left nothing Running in Prefect (read from the same data, now served again): its
        # dispatch run said why it ended, and the task running then was handed back, its task run Cancelled.
        assert_reported_stopped(stack, first_dispatch)
        still = {r["id"] for r in flow_runs(stack, flow_runs={"state": {"type": {"any_": ["RUNNING", "PENDING"]}}})}
        assert not still & first_runs, flow_runs(stack, flow_runs={"id": {"any_": sorted(still & first_runs)}})
        events = json.loads(run_orch("tasks", "show", long_task, env={"ORCH_HOME": str(home)}).stdout)["events"]
        handed = httpx.get(f"{stack.prefect_api}/task_runs/{events[1]['data']['task_run_id']}",
                           headers=stack.prefect, timeout=10).json()
        assert handed["state"]["type"] == "CANCELLED", handed["state"]
        assert [e["event_type"] for e in events][:3] == ["task.created", "task.started", "task.retrying"], events
        assert events[2]["data"]["reason"] == "handed back: its dispatcher stopped while it ran", events
        assert (home / "data" / "secrets.json").read_text() == secrets_before
        output = stack.stop()
        assert_stopped_cleanly(stack, output)
    auth = stack.prefect_auth_string
    assert auth not in output
    assert not [log.name for log in (home / "data" / "logs").glob("*.log") if auth in log.read_text(errors="replace")]

    again = run_orch("user", "create-admin", "--username", "keeper", "--password-stdin",
                     input="Keep-All-Data-42!\n", env={"ORCH_HOME": str(home)})
    assert again.stderr.strip() == "error: user 'keeper' already exists"  # ORCH's data survived too


def up_fails(home: Path, extra: dict[str, str]) -> str:
    env = {**stack_env(home, free_port(), free_port()), **extra}
    result = subprocess.run([str(BIN / "orch"), "up"], cwd=home, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = up_fails(tmp_path, {"ORCH_PORT": str(port)})
    assert line == f"error: port {port} on 127.0.0.1 is already in use; the ORCH API needs it (set ORCH_PORT)"


def test_up_refuses_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    line = up_fails(tmp_path, {"DATABASE_URL": f"postgresql://orch:pw-secret-1@127.0.0.1:{port}/orch"})
    assert line.startswith(f"error: database postgresql://orch:***@127.0.0.1:{port}/orch: ")
    assert "pw-secret-1" not in line


def test_up_refuses_a_read_only_data_dir(tmp_path: Path) -> None:
    """/proc is read-only even for root, unlike a chmod-ed directory."""
    secrets = {name: f"{name}-given-by-operator-0123" for name in ("JWT_SECRET", "WEBHOOK_SECRET",
                                                                    "ORCH_MCP_TOKEN", "PREFECT_API_AUTH_STRING")}
    line = up_fails(tmp_path, {"ORCH_DATA_DIR": "/proc/self", **secrets})
    assert line.startswith("error: data directory /proc/self is not writable"), line


def test_up_refuses_a_data_dir_it_cannot_create(tmp_path: Path) -> None:
    line = up_fails(tmp_path, {"ORCH_DATA_DIR": "/proc/orch-data"})
    assert line.startswith("error: data_dir: cannot write generated secrets to /proc/orch-data/secrets.json")


@pytest.mark.slow
def test_up_uses_an_existing_prefect_server(tmp_path: Path, prefect_server: str) -> None:
    """With PREFECT_API_URL set, `orch up` starts no server: worker, deployments and API only."""
    with orch_up(tmp_path, free_port(), free_port(), PREFECT_API_URL=prefect_server,
                 PREFECT_API_AUTH_STRING=os.environ["PREFECT_API_AUTH_STRING"]) as stack:
        stack.read_until("Press Ctrl-C to stop.", UP_TIMEOUT)
        output = "".join(stack.lines)
        assert "Prefect UI" not in output and f"Prefect API:  {prefect_server}" in output
        started = [command for _, command in commands(stack.process.pid)]
        assert not any("server start" in c for c in started), started
        assert any("orch.stack.worker" in c for c in started) and any("orch.api.server" in c for c in started)
        assert deployment(stack, "hourly")["work_pool_name"] == "orch-process"
        assert httpx.get(f"{stack.orch_api}/health", timeout=10).json()["status"] == "ok"
        dispatching = dispatch_run(stack)["id"]
        assert_stopped_cleanly(stack, stack.stop())
    assert_reported_stopped(stack, dispatching)  # the server outlives the stack: asked directly
