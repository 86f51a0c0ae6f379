"""Start-up benchmark: ``orch up`` against the same stack stitched together by hand.

Why it exists: ``orch up`` promises one command that is healthy within 12 s, whose own processes
(everything but the Prefect server, which any Prefect set-up pays for) stay within 250 MB RSS at idle,
that stops within 2 s and leaves nothing running after Ctrl-C (issue 17). Those promises are only worth
something when measured the way an operator meets them: a fresh data directory, free ports, real
processes, health checked from the outside instead of taken from ``orch up``'s own word. The naive
baseline is the same stack started with the CLI commands an operator would type one after another, so
the figures show what ``orch up`` buys.

Each ``orch up`` start is timed phase by phase from the outside (Prefect server ready, ORCH API ready,
deployments applied, worker polling both pools), beside the Prefect server alone started exactly as
``orch up`` starts it: the floor any start of this stack pays. ``--load-minutes N`` adds one more start
that is kept busy for N minutes (single ``POST /dispatch`` at a steady rate, the scheduled sweeps running
as usual) and reads every process's RSS at idle, every 30 s under load and at the end: what grows, and
whether it stops. ``--compare-tree DIR`` starts ``orch up`` from another copy of the source tree (put first
on ``PYTHONPATH``) in the same invocation, alternating with this one, so before/after figures share a run.

Usage: ``.venv/bin/python scripts/bench_startup.py [--runs N] [--out DIR] [--load-minutes N]
[--load-rate R] [--compare-tree DIR] [--skip-naive]``. Progress goes to stderr, the markdown table to
stdout and ``<out>/bench_startup.md``, every figure to ``<out>/bench_startup.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from bench_common import BenchError, clean_environ, log_tail, machine_info, spread

from orch.stack.pools import INPROCESS_POOL
from orch.stack.pools import PROCESS_POOL as POOL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's bin: orch, prefect
DEPLOYMENT = "hourly"
READY_LINE = "Press Ctrl-C to stop."
START_TIMEOUT = 150.0
IDLE_SECONDS = 10.0
STOP_TIMEOUT = 30.0
POLL_SECONDS = 0.1
MIN_BASELINE_RUNS = 2  # one hand-stitched run says little about its spread
GOAL_HEALTHY_S = 12.0
GOAL_OWN_RSS_MB = 250.0
GOAL_STOP_S = 2.0  # SIGTERM to `orch up` exited, every process ended on its own (issue 15)
PREFECT_SERVER = "prefect server"
SUPERVISOR = "supervisor"
SCENARIOS = {"fresh": "`orch up` (fresh)", "existing": "`orch up` (existing data)",
             "compare": "compare tree `orch up` (fresh)",
             "compare-existing": "compare tree `orch up` (existing data)", "prefect": "Prefect server alone (fresh)",
             "naive": "naive baseline"}
PHASE_POLL_SECONDS = 0.1
LOAD_SAMPLE_SECONDS = 30.0
RATE_LIMIT_ENV = "ORCH_SECURITY__RATE_LIMIT__REQUESTS_PER_MINUTE"
LOAD_USER = "bench-admin"
LOAD_PASSWORD = "bench-Password-0123"
# Both stacks keep Prefect's API behind an auth string, as `orch up` does; the checks send it.
PREFECT_AUTH = f"orch:{secrets.token_urlsafe(32)}"
PREFECT_AUTH_ENV = {"PREFECT_API_AUTH_STRING": PREFECT_AUTH, "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH}


def prefect_auth_headers() -> dict[str, str]:
    from orch.config.schema import PrefectSettings
    from orch.prefect_api import prefect_headers

    return prefect_headers(PrefectSettings(auth_string=PREFECT_AUTH))


@dataclass(frozen=True)
class Endpoints:
    prefect_port: int
    api_port: int
    deployments: int = 0  # how many the stack's prefect.yaml declares

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def orch_api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def deployment_count(tree: Path | None) -> int:
    import yaml

    spec = yaml.safe_load(((tree or PROJECT_ROOT) / "prefect.yaml").read_text(encoding="utf-8"))
    return len(spec.get("deployments", []))


@dataclass
class RunResult:
    """One start: ``milestones_s`` are seconds after the first spawn, the last one being 'verified healthy';
    ``stopped_s`` says when each component's process had exited, in seconds after the SIGTERM."""

    healthy_s: float
    stop_s: float
    stopped_s: dict[str, float]
    orphans: int
    rss_mb: dict[str, float]
    milestones_s: dict[str, float]
    load_avg_1m: float  # the machine is shared: a busy neighbour explains an outlier
    load: dict[str, object] | None = None  # --load-minutes: what was sent, RSS samples over time

    @property
    def prefect_rss_mb(self) -> float:
        return self.rss_mb.get(PREFECT_SERVER, 0.0)

    @property
    def own_rss_mb(self) -> float:
        return sum(mb for name, mb in self.rss_mb.items() if name != PREFECT_SERVER)

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "rss_prefect_server_mb": round(self.prefect_rss_mb, 1),
                "rss_orch_own_mb": round(self.own_rss_mb, 1)}


# --- environment and ports -------------------------------------------------------------------------

def free_endpoints() -> Endpoints:
    """Two distinct free loopback ports, both held while picking so they cannot be the same one."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return Endpoints(first.getsockname()[1], second.getsockname()[1])


def warm_page_cache() -> None:
    """Import the heavy packages once, unmeasured, so the first run does not pay disk reads the rest skip."""
    subprocess.run([sys.executable, "-c", "import prefect.server.api.server, prefect.workers.process, "
                    "orch.api.app"], env=clean_environ(), capture_output=True, timeout=START_TIMEOUT)


# --- health, checked from the outside ------------------------------------------------------------

Check = Callable[[httpx.Client, Endpoints], str | None]


def orch_health(client: httpx.Client, ends: Endpoints) -> str | None:
    response = client.get(f"{ends.orch_api}/health")
    if response.status_code != 200:
        return f"ORCH /health answered HTTP {response.status_code}"
    status = response.json().get("status")
    return None if status == "ok" else f"ORCH /health says {status!r}"


def prefect_ready(client: httpx.Client, ends: Endpoints) -> str | None:
    code = client.get(f"{ends.prefect_api}/ready").status_code
    return None if code == 200 else f"Prefect /api/ready answered HTTP {code}"


def worker_online(client: httpx.Client, ends: Endpoints) -> str | None:
    response = client.post(f"{ends.prefect_api}/work_pools/{POOL}/workers/filter", json={},
                           headers=prefect_auth_headers())
    if response.status_code != 200:
        return f"work pool {POOL}: HTTP {response.status_code}"
    online = any(worker.get("status") == "ONLINE" for worker in response.json())
    return None if online else f"no ONLINE worker in work pool {POOL}"


def deployment_exists(client: httpx.Client, ends: Endpoints) -> str | None:
    response = client.post(f"{ends.prefect_api}/deployments/filter",
                           json={"deployments": {"name": {"any_": [DEPLOYMENT]}}}, headers=prefect_auth_headers())
    found = response.status_code == 200 and bool(response.json())
    return None if found else f"deployment {DEPLOYMENT!r} not found"


def api_serving(client: httpx.Client, ends: Endpoints) -> str | None:
    code = client.get(f"{ends.orch_api}/healthz").status_code
    return None if code == 200 else f"ORCH /healthz answered HTTP {code}"


def all_deployments(client: httpx.Client, ends: Endpoints) -> str | None:
    """Every deployment of the measured tree's prefect.yaml exists (the applier creates them one by one)."""
    expected = ends.deployments
    response = client.post(f"{ends.prefect_api}/deployments/count", json={}, headers=prefect_auth_headers())
    found = response.json() if response.status_code == 200 else 0
    return None if found >= expected else f"{found} of {expected} deployments"


def worker_polling(client: httpx.Client, ends: Endpoints) -> str | None:
    """ORCH's worker polls both of its pools (the process pool and the in-process one)."""
    for pool in (POOL, INPROCESS_POOL):
        response = client.post(f"{ends.prefect_api}/work_pools/{pool}/workers/filter", json={},
                               headers=prefect_auth_headers())
        if response.status_code != 200 or not any(w.get("status") == "ONLINE" for w in response.json()):
            return f"no ONLINE worker in work pool {pool}"
    return None


# When each start phase is first seen done from outside; the order is the stack's dependency order.
PHASES: dict[str, Check] = {"prefect server ready": prefect_ready, "api ready": api_serving,
                            "deployments applied": all_deployments, "worker polling": worker_polling}


class PhaseClock:
    """Polls the phases not yet done every 0.1 s from a thread, noting the seconds since ``began``."""

    def __init__(self, ends: Endpoints, began: float, root: Callable[[], int | None] = lambda: None) -> None:
        self.ends = ends
        self.began = began
        self.root = root  # the stack's root pid, once known: deployments count as applied once its applier exited
        self.done: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with httpx.Client(timeout=2) as client:
            while len(self.done) < len(PHASES) and not self._stop.wait(PHASE_POLL_SECONDS):
                for name, check in PHASES.items():
                    if name in self.done:
                        continue
                    try:
                        passed = check(client, self.ends) is None
                    except (httpx.HTTPError, ValueError):
                        passed = False
                    if passed and check is all_deployments:
                        passed = not self._applier_running()  # over existing data they exist from the start
                    if passed:
                        self.done[name] = round(time.monotonic() - self.began, 2)

    def _applier_running(self) -> bool:
        pid = self.root()
        if pid is None:
            return True
        for proc in descendants(pid):
            with contextlib.suppress(psutil.Error):
                if "deployments.apply" in " ".join(proc.cmdline()):
                    return True
        return False

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return dict(self.done)


# Keyed by the component whose log explains a failure; orch up and the baseline use the same log names.
CHECKS: dict[str, Check] = {"api": orch_health, "prefect-server": prefect_ready, "worker": worker_online,
                            "deployments": deployment_exists}


def first_problem(ends: Endpoints, components: Iterable[str]) -> tuple[str, str] | None:
    """(component, what is wrong) for the first failing check, or None when all of them pass."""
    with httpx.Client(timeout=5) as client:
        for component in components:
            try:
                problem = CHECKS[component](client, ends)
            except (httpx.HTTPError, ValueError) as exc:  # not listening yet, or not JSON yet
                problem = f"{component}: {type(exc).__name__}"
            if problem:
                return component, problem
    return None


def wait_healthy(ends: Endpoints, components: Iterable[str], deadline: float, log_dir: Path,
                 alive: Callable[[], None]) -> None:
    """Poll until the checks pass; ``alive`` raises as soon as a process being waited on has died."""
    components = list(components)
    while (problem := first_problem(ends, components)) is not None:
        alive()
        if time.monotonic() > deadline:
            component, detail = problem
            raise BenchError(f"not healthy after {START_TIMEOUT:.0f} s: {detail}",
                             log_tail(log_dir / f"{component}.log"))
        time.sleep(POLL_SECONDS)


def is_alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class ExitClock:
    """When each process of a stopping stack exits, polled every 10 ms from a thread: which part of a stop
    costs what (the order of `orch up`'s stop shows in it: API and worker first, the Prefect server last)."""

    def __init__(self, procs: Iterable[psutil.Process]) -> None:
        self.procs = {proc: component_label(proc) for proc in procs}
        self.exited: dict[str, float] = {}
        self.began = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        waiting = dict(self.procs)
        while waiting and not self._done.wait(0.01):
            for proc, label in list(waiting.items()):
                if not is_alive(proc):
                    at = round(time.monotonic() - self.began, 2)
                    self.exited[label] = max(at, self.exited.get(label, 0.0))
                    del waiting[proc]

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        return dict(sorted(self.exited.items(), key=lambda item: item[1]))


def kill_all(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL what is still alive. ``psutil`` checks creation times, so a recycled pid is never hit."""
    survivors = [p for p in procs if is_alive(p)]
    for proc in survivors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(survivors, timeout=5)


def rss_mb(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def component_label(proc: psutil.Process) -> str:
    """Name a process by what it runs, so both stacks' memory is grouped the same way."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "exited"
    command = " ".join(argv)
    if "server start" in command:
        return PREFECT_SERVER
    if "orch.api.server" in command:
        return "orch api"
    if "worker start" in command or "orch.stack.worker" in command:
        return "worker"  # orch up's worker also hosts the ORCH dispatcher; the baseline's is Prefect's alone
    return " ".join([Path(argv[0]).name, *argv[1:3]]) if argv else proc.name()


def rss_by_component(roots: Iterable[psutil.Process]) -> dict[str, float]:
    """Each root with everything it started (flow runs count towards their worker)."""
    usage: dict[str, float] = {}
    for root in roots:
        tree = [root, *descendants(root.pid)]
        label = component_label(root)
        usage[label] = round(usage.get(label, 0.0) + sum(rss_mb(p) for p in tree), 1)
    return usage


# --- orch up -------------------------------------------------------------------------------------

class OrchUp:
    """``orch up`` as a child process, its output lines timestamped as they arrive."""

    def __init__(self, home: Path, ends: Endpoints, tree: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        env = {**clean_environ(), "ORCH_HOME": str(home), "PREFECT_SERVER_API_PORT": str(ends.prefect_port),
               "ORCH_PORT": str(ends.api_port), **PREFECT_AUTH_ENV, **(extra_env or {})}
        if tree is not None:  # another copy of the source: first on the path, for orch up and its children
            env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        self.env = env
        self.ends = ends
        self.log_dir = home / "data" / "logs"
        self.lines: list[tuple[float, str]] = []
        self.milestones: dict[str, float] = {}
        self.tree: list[psutil.Process] = []
        self.started = time.monotonic()
        self.phases = PhaseClock(ends, self.started, lambda: self.process.pid if hasattr(self, "process") else None)
        self.process = subprocess.Popen([str(BIN / "orch"), "up"], cwd=home, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._pump = threading.Thread(target=self._read_output, daemon=True)
        self._pump.start()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((self.elapsed(), line.rstrip()))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def tail(self, count: int = 8) -> list[str]:
        self._pump.join(timeout=2 if self.process.poll() is not None else 0)
        return [line for _, line in self.lines[-count:]]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"`orch up` exited with code {self.process.returncode}", self.tail())

    def wait_until_up(self) -> None:
        """The ready line, then the same stack verified from outside; notes milestones on the way.

        Milestones are read without touching the stack: output lines, and the phases as seen through the
        stack's own APIs (:class:`PhaseClock`).
        """
        deadline = self.started + START_TIMEOUT
        while not self._saw(READY_LINE):
            self.alive()
            if time.monotonic() > deadline:
                raise BenchError(f"`orch up` printed no {READY_LINE!r} within {START_TIMEOUT:.0f} s", self.tail())
            time.sleep(POLL_SECONDS)
        wait_healthy(self.ends, CHECKS, deadline, self.log_dir, self.alive)
        self.milestones["verified healthy"] = self.elapsed()
        self.milestones.update(self.phases.stop())
        found = {"ready line": self._line_time(READY_LINE), "database ready": self._line_time(" at schema ")}
        self.milestones.update({name: at for name, at in found.items() if at is not None})

    def _saw(self, marker: str) -> bool:
        return any(marker in line for _, line in self.lines)

    def _line_time(self, marker: str) -> float | None:
        return next((at for at, line in self.lines if marker in line), None)

    def stop(self) -> tuple[float, int, dict[str, float]]:
        """SIGTERM as Ctrl-C would; (seconds until it exited, processes of its tree still alive then,
        when each component exited). A stop that had to kill something is an error, not a figure."""
        self.tree = descendants(self.process.pid)
        clock = ExitClock(psutil.Process(self.process.pid).children())
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`orch up` still running {STOP_TIMEOUT:.0f} s after SIGTERM", self.tail()) from None
        stop_s = time.monotonic() - began
        self._pump.join(timeout=5)
        killed = [line for _, line in self.lines if line.startswith("killing ")]
        if killed:
            raise BenchError(f"`orch up` had to kill processes at its stop: {killed[0]}", self.tail())
        return stop_s, sum(1 for p in self.tree if is_alive(p)), {**clock.stop(), "orch up": round(stop_s, 2)}

    def kill(self) -> None:
        """Leave nothing running whatever happened; SIGTERM first so ``orch up`` stops its own children."""
        self.phases.stop()
        tree = [*self.tree, *descendants(self.process.pid)]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        kill_all(tree)


def orch_up_rss(stack: OrchUp) -> dict[str, float]:
    supervisor = psutil.Process(stack.process.pid)
    return {SUPERVISOR: round(rss_mb(supervisor), 1), **rss_by_component(supervisor.children())}


def run_orch_up(home: Path, tree: Path | None = None, load_minutes: float = 0.0,
                load_rate: float = 0.0) -> RunResult:
    load = os.getloadavg()[0]
    ends = free_endpoints()
    # Under load the one bench user sends more than the default 100 requests a minute: the limit is raised
    # so that every dispatch is accepted work rather than a 429.
    extra = {RATE_LIMIT_ENV: str(max(100, int(load_rate * 60 * 2)))} if load_minutes > 0 else None
    stack = OrchUp(home, Endpoints(ends.prefect_port, ends.api_port, deployment_count(tree)), tree, extra)
    try:
        stack.wait_until_up()
        healthy_s = stack.milestones["verified healthy"]
        time.sleep(IDLE_SECONDS)
        rss = orch_up_rss(stack)
        series = keep_busy(stack, load_minutes, load_rate) if load_minutes > 0 else None
        stop_s, orphans, stopped = stack.stop()
        milestones = dict(sorted(stack.milestones.items(), key=lambda item: item[1]))
        return RunResult(healthy_s, round(stop_s, 2), stopped, orphans, rss, milestones, load, series)
    finally:
        stack.kill()


def keep_busy(stack: OrchUp, minutes: float, rate: float) -> dict[str, object]:
    """Single ``POST /dispatch`` of no-op tasks at ``rate`` per second for ``minutes`` (the sweeps run on
    their schedule meanwhile); each component's RSS every 30 s. An admin is made by the CLI first, as an
    operator would, and its token used throughout."""
    user = subprocess.run([str(BIN / "orch"), "user", "create-admin", "--username", LOAD_USER, "--password-stdin"],
                          input=LOAD_PASSWORD + "\n", env=stack.env, cwd=stack.log_dir.parent.parent,
                          capture_output=True, text=True, timeout=60)
    if user.returncode != 0:
        raise BenchError("`orch user create-admin` failed", user.stderr.splitlines()[-3:])
    with httpx.Client(base_url=stack.ends.orch_api, timeout=10) as client:
        token = client.post("/auth/token", data={"username": LOAD_USER, "password": LOAD_PASSWORD})
        if token.status_code != 200:
            raise BenchError(f"POST /auth/token answered HTTP {token.status_code}", [token.text[:200]])
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        began = time.monotonic()
        samples: list[dict[str, object]] = [{"at_s": 0.0, "rss_mb": orch_up_rss(stack)}]
        sent = errors = 0
        refused: dict[int, int] = {}  # HTTP status: how many
        next_sample = began + LOAD_SAMPLE_SECONDS
        while (now := time.monotonic()) < began + minutes * 60:
            stack.alive()
            due = began + sent / rate
            if now < due:
                time.sleep(min(due - now, 0.05))
                continue
            body = {"core_id": f"WORK_AI_{sent % 8:02d}", "action": "noop", "metadata": {"source": "bench"}}
            answer = client.post("/dispatch", json=body)
            if answer.status_code != 202:
                errors += 1
                refused[answer.status_code] = refused.get(answer.status_code, 0) + 1
            sent += 1
            if sent == 20 and errors == sent:
                raise BenchError(f"POST /dispatch answered HTTP {answer.status_code}", [answer.text[:300]])
            if now >= next_sample:
                samples.append({"at_s": round(now - began, 1), "rss_mb": orch_up_rss(stack)})
                next_sample += LOAD_SAMPLE_SECONDS
    samples.append({"at_s": round(time.monotonic() - began, 1), "rss_mb": orch_up_rss(stack)})
    print(f"load: {sent} dispatches in {minutes:g} min, {errors} not accepted; RSS "
          f"{samples[0]['rss_mb']} -> {samples[-1]['rss_mb']}", file=sys.stderr, flush=True)
    return {"minutes": minutes, "rate_per_s": rate, "dispatched": sent, "not_accepted": errors,
            "refused_by_status": refused, "samples": samples}


# --- the Prefect server alone ------------------------------------------------------------------------

def run_prefect_alone(home: Path) -> RunResult:
    """The Prefect server started exactly as `orch up` starts it (its argv and environment, a fresh
    PREFECT_HOME): the floor of any start of this stack, and of its stop."""
    from orch.config.loader import load_settings
    from orch.stack.up import child_environment, components

    load = os.getloadavg()[0]
    ends = free_endpoints()
    home.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**clean_environ(), "ORCH_HOME": str(home), "PREFECT_SERVER_API_PORT": str(ends.prefect_port),
                       **PREFECT_AUTH_ENV})
    try:
        settings = load_settings(None)
        server = components(settings, child_environment(settings, None), POOL)["prefect-server"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    started = time.monotonic()
    with open(home / "prefect-server.log", "wb") as log:
        process = subprocess.Popen(server.argv, cwd=server.cwd, env=server.env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        root = psutil.Process(process.pid)
        try:
            def alive() -> None:
                if process.poll() is not None:
                    raise BenchError(f"prefect server exited with code {process.returncode}",
                                     log_tail(home / "prefect-server.log"))

            wait_healthy(ends, ["prefect-server"], started + START_TIMEOUT, home, alive)
            ready_s = round(time.monotonic() - started, 2)
            time.sleep(IDLE_SECONDS)
            rss = rss_by_component([root])
            tree = [root, *descendants(root.pid)]
            clock = ExitClock([root])
            began = time.monotonic()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_TIMEOUT)
            stop_s = round(time.monotonic() - began, 2)
            return RunResult(ready_s, stop_s, clock.stop(), sum(1 for p in tree if is_alive(p)), rss,
                             {"prefect server ready": ready_s}, load)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- naive baseline --------------------------------------------------------------------------------

class HandStitched:
    """The stack as an operator starts it by hand: one command after another, each server in its own
    session (its own terminal, in effect), each step waiting for the previous one to be usable."""

    def __init__(self, home: Path, ends: Endpoints) -> None:
        self.ends = ends
        self.env = {**clean_environ(), "PREFECT_HOME": str(home / "prefect"), "PREFECT_API_URL": ends.prefect_api,
                    "ORCH_HOME": str(home), "ORCH_PORT": str(ends.api_port), **PREFECT_AUTH_ENV}
        self.log_dir = home / "logs"
        self.log_dir.mkdir(parents=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[IO[bytes]] = []
        self.tree: list[psutil.Process] = []
        self.milestones: dict[str, float] = {}
        self.started = time.monotonic()
        self.deadline = self.started + START_TIMEOUT

    def start(self) -> None:
        prefect = str(BIN / "prefect")
        self.spawn("prefect-server", [prefect, "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.ends.prefect_port), "--analytics-off"])
        self.wait_for("prefect-server", "prefect server ready")
        self.run("work-pool", [prefect, "work-pool", "create", POOL, "--type", "process"],
                 tolerate="already exists")
        # prefect.yaml also deploys to ORCH's in-process pool, which `prefect deploy` refuses to target
        # while it does not exist; by hand it is one more pool (nothing runs its flows in the baseline).
        self.run("work-pool-inprocess", [prefect, "work-pool", "create", INPROCESS_POOL, "--type", "process"],
                 tolerate="already exists")
        self.mark("work pool created")
        self.run("deployments", [prefect, "--no-prompt", "deploy", "--all"])
        self.mark("deployments applied")
        self.spawn("worker", [prefect, "worker", "start", "--pool", POOL, "--type", "process"])
        self.wait_for("worker", "worker online")
        self.run("db-init", [str(BIN / "orch"), "db", "init"])
        self.mark("orch db init done")
        self.spawn("api", [sys.executable, "-m", "orch.api.server"])
        self.wait_for("api", "api healthy")
        self.wait_for(CHECKS, "verified healthy")

    def mark(self, milestone: str) -> None:
        self.milestones[milestone] = round(time.monotonic() - self.started, 2)

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - open while the process runs
        self.logs.append(log)
        self.processes[name] = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, argv: list[str], tolerate: str | None = None) -> None:
        """A one-shot CLI command; a failure whose output contains ``tolerate`` is what re-running expects."""
        log = self.log_dir / f"{name}.log"
        try:
            with open(log, "wb") as output:
                result = subprocess.run(argv, cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT,
                                        timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{' '.join(argv[1:])}` did not finish within the {START_TIMEOUT:.0f} s start budget",
                             log_tail(log)) from None
        if result.returncode != 0 and not (tolerate and tolerate in log.read_text(errors="replace")):
            raise BenchError(f"`{' '.join(argv[1:])}` exited with code {result.returncode}", log_tail(log))

    def wait_for(self, components: str | Iterable[str], milestone: str) -> None:
        wait_healthy(self.ends, [components] if isinstance(components, str) else components, self.deadline,
                     self.log_dir, self.alive)
        self.mark(milestone)

    def alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}",
                                 log_tail(self.log_dir / f"{name}.log"))

    def roots(self) -> list[psutil.Process]:
        return [psutil.Process(process.pid) for process in self.processes.values()]

    def stop(self) -> tuple[float, int, dict[str, float]]:
        """SIGTERM every session at once, as Ctrl-C in each terminal would; (seconds, survivors, when each
        exited). The Prefect server's own exit here is the baseline of `orch up`'s stop figure."""
        self.tree = [p for root in self.roots() for p in (root, *descendants(root.pid))]
        clock = ExitClock(self.roots())
        began = time.monotonic()
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, began + STOP_TIMEOUT - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"{name} still running {STOP_TIMEOUT:.0f} s after SIGTERM",
                                 log_tail(self.log_dir / f"{name}.log")) from None
        return time.monotonic() - began, sum(1 for p in self.tree if is_alive(p)), clock.stop()

    def kill(self) -> None:
        """SIGKILL every session still led by its process (only then is the group surely still ours)."""
        tree = [*self.tree, *(p for process in self.processes.values() for p in descendants(process.pid))]
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        kill_all(tree)
        for log in self.logs:
            log.close()


def run_naive(home: Path) -> RunResult:
    load = os.getloadavg()[0]
    stack = HandStitched(home, free_endpoints())
    try:
        stack.start()
        time.sleep(IDLE_SECONDS)
        rss = rss_by_component(stack.roots())
        stop_s, orphans, stopped = stack.stop()
        return RunResult(stack.milestones["verified healthy"], round(stop_s, 2), stopped, orphans, rss,
                         stack.milestones, load)
    finally:
        stack.kill()


# --- report --------------------------------------------------------------------------------------

def component_names(results: dict[str, list[RunResult]]) -> list[str]:
    """ORCH's components in a fixed order first, then whatever else turned up (labelled by command)."""
    seen = {name for runs in results.values() for run in runs for name in run.rss_mb} - {PREFECT_SERVER}
    fixed = [name for name in (SUPERVISOR, "orch api", "worker") if name in seen]
    return fixed + sorted(seen - set(fixed))


def summarize(runs: list[RunResult], components: list[str]) -> dict[str, dict[str, float]]:
    """Median/min/max per figure; a component absent from a scenario (no supervisor by hand) is left out."""
    figures = {
        "healthy_s": [r.healthy_s for r in runs],
        "stop_s": [r.stop_s for r in runs],
        "orphans": [float(r.orphans) for r in runs],
        "rss_prefect_server_mb": [r.prefect_rss_mb for r in runs],
        "rss_orch_own_mb": [r.own_rss_mb for r in runs],
    }
    for name in components:
        if any(name in r.rss_mb for r in runs):
            figures[f"rss_mb:{name}"] = [r.rss_mb.get(name, 0.0) for r in runs]
    for name in sorted({name for r in runs for name in r.milestones_s}):
        figures[f"milestone_s:{name}"] = [r.milestones_s[name] for r in runs if name in r.milestones_s]
    for name in sorted({name for r in runs for name in r.stopped_s}):
        figures[f"stopped_s:{name}"] = [r.stopped_s[name] for r in runs if name in r.stopped_s]
    return {key: spread(values) for key, values in figures.items()}


def cell(summary: dict[str, dict[str, float]], key: str, decimals: int) -> str:
    if key not in summary:
        return "–"
    median, low, high = (f"{summary[key][stat]:.{decimals}f}" for stat in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}–{high})"


def markdown(summaries: dict[str, dict[str, dict[str, float]]], components: list[str],
             machine: dict[str, object], counts: dict[str, int], loaded: dict[str, RunResult]) -> str:
    shown = [key for key in SCENARIOS if counts.get(key)]
    rows = [("time to all healthy (s)", "healthy_s", 1), ("stop time (s)", "stop_s", 1),
            ("orphans after stop", "orphans", 0), ("RSS Prefect server (MB)", "rss_prefect_server_mb", 0),
            ("RSS ORCH's own processes (MB)", "rss_orch_own_mb", 0),
            *((f"RSS {name} (MB)", f"rss_mb:{name}", 0) for name in components)]
    header = ["| figure | " + " | ".join(f"{SCENARIOS[key]} ×{counts[key]}" for key in shown) + " |",
              "|---|" + "---|" * len(shown)]
    body = ["| " + " | ".join([label, *(cell(summaries[key], figure, decimals) for key in shown)]) + " |"
            for label, figure, decimals in rows]
    return "\n".join([
        "# ORCH-Next start-up benchmark", "",
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, Prefect {machine['prefect']}, "
        f"{machine['timestamp']}, load average at start {machine['load_avg_1m']}. "
        "Cells: median (min–max). ORCH's own processes = everything but the Prefect server. "
        "The Prefect server alone is started with `orch up`'s argv and environment; its time is to /api/ready.",
        "", *header, *body, "", *goal_lines(summaries), "",
        "Milestones (median s after the first spawn; phases seen from outside through the stack's APIs):",
        *(f"- {SCENARIOS[key]}: " + milestone_line(summaries[key]) for key in shown), "",
        "Stop: each process exited (median s after SIGTERM):",
        *(f"- {SCENARIOS[key]}: " + milestone_line(summaries[key], "stopped_s:") for key in shown), "",
        *load_lines(loaded, components)])


def load_lines(loaded: dict[str, RunResult], components: list[str]) -> list[str]:
    """RSS per process at idle, after the load and at its peak; and the samples, to see a plateau."""
    if not loaded:
        return []
    lines = []
    for key, run in loaded.items():
        assert run.load is not None
        samples: list[dict[str, Any]] = run.load["samples"]  # type: ignore[assignment]
        names = [n for n in [PREFECT_SERVER, *components] if any(n in s["rss_mb"] for s in samples)]
        lines += [f"Under load, {SCENARIOS[key]}: {run.load['dispatched']} single `POST /dispatch` at "
                  f"{run.load['rate_per_s']:g}/s for {run.load['minutes']:g} min ({run.load['not_accepted']} not "
                  "accepted), sweeps on their schedule. RSS (MB):", "",
                  "| process | idle | after load | peak | +MB | last half: +MB |", "|---|---|---|---|---|---|"]
        half = samples[len(samples) // 2]["rss_mb"]
        for name in [*names, "ORCH's own"]:
            def at(sample: dict[str, float], n: str = name) -> float:
                return (sum(v for k, v in sample.items() if k != PREFECT_SERVER) if n == "ORCH's own"
                        else sample.get(n, 0.0))
            first, last = at(samples[0]["rss_mb"]), at(samples[-1]["rss_mb"])
            peak = max(at(s["rss_mb"]) for s in samples)
            lines.append(f"| {name} | {first:.0f} | {last:.0f} | {peak:.0f} | {last - first:+.0f} | "
                         f"{last - at(half):+.0f} |")
        lines += ["", "Samples (s: ORCH's own MB): " + ", ".join(
            f"{s['at_s']:.0f}: {sum(v for k, v in s['rss_mb'].items() if k != PREFECT_SERVER):.0f}"
            for s in samples), ""]
    return lines


def goal_lines(summaries: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Judged on the median of the fresh ``orch up`` runs; the worst run is shown beside it, and the
    Prefect server alone (its start and its own stop, the floor of both) beside that."""
    fresh = summaries["fresh"]
    healthy, own, stop = fresh["healthy_s"], fresh["rss_orch_own_mb"], fresh["stop_s"]
    alone = summaries.get("prefect", {})
    nan = {"median": float("nan")}
    verdict = {True: "PASS", False: "FAIL"}
    return [f"Goal: healthy <= {GOAL_HEALTHY_S:.0f} s; ORCH's own processes <= {GOAL_OWN_RSS_MB:.0f} MB RSS at "
            f"idle; stop <= {GOAL_STOP_S:.0f} s",
            f"- stop <= {GOAL_STOP_S:.0f} s: {verdict[stop['median'] <= GOAL_STOP_S]} (fresh `orch up` median "
            f"{stop['median']:.1f} s, worst {stop['max']:.1f} s; the Prefect server alone "
            f"{alone.get('stop_s', nan)['median']:.1f} s)",
            f"- healthy <= {GOAL_HEALTHY_S:.0f} s: {verdict[healthy['median'] <= GOAL_HEALTHY_S]} "
            f"(fresh `orch up` median {healthy['median']:.1f} s, worst {healthy['max']:.1f} s; the Prefect server "
            f"alone {alone.get('healthy_s', nan)['median']:.1f} s)",
            f"- ORCH's own processes <= {GOAL_OWN_RSS_MB:.0f} MB RSS: "
            f"{verdict[own['median'] <= GOAL_OWN_RSS_MB]} (fresh `orch up` median {own['median']:.0f} MB, "
            f"worst {own['max']:.0f} MB)"]


def milestone_line(summary: dict[str, dict[str, float]], prefix: str = "milestone_s:") -> str:
    found = [(figure["median"], key.removeprefix(prefix)) for key, figure in summary.items()
             if key.startswith(prefix)]
    return " → ".join(f"{name} {at:.1f}" for at, name in sorted(found))


def progress(scenario: str, number: int | str, result: RunResult) -> None:
    print(f"{SCENARIOS[scenario]} run {number}: healthy in {result.healthy_s:.1f} s, stopped in "
          f"{result.stop_s:.1f} s, {result.orphans} orphan(s), Prefect server {result.prefect_rss_mb:.0f} MB, "
          f"ORCH's own {result.own_rss_mb:.0f} MB", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    runs: int
    compare_tree: Path | None = None
    naive: bool = True
    tree: Path | None = None  # the source tree of the main scenarios (default: the installed one)
    load_minutes: float = 0.0
    load_rate: float = 5.0


def bench(plan: Plan, workdir: Path) -> tuple[dict[str, list[RunResult]], dict[str, RunResult]]:
    """Every scenario's runs alternate so a busy neighbour on the machine hurts them alike; each tree's
    existing-data run restarts over its first fresh run's directory right after it. The load runs come
    last, one per tree: ({scenario: idle runs}, {scenario: load run})."""
    results: dict[str, list[RunResult]] = {key: [] for key in SCENARIOS}
    loaded: dict[str, RunResult] = {}

    def record(scenario: str, run: Callable[[Path], RunResult], home: Path) -> RunResult:
        home.mkdir(parents=True, exist_ok=True)
        try:
            result = run(home)
        except BenchError as exc:
            raise BenchError(f"{SCENARIOS[scenario]} run {len(results[scenario]) + 1}: {exc.args[0]}",
                             exc.tail) from None
        progress(scenario, len(results[scenario]) + 1 if result.load is None else "under load", result)
        return result

    trees = {"fresh": plan.tree, **({"compare": plan.compare_tree} if plan.compare_tree else {})}
    for number in range(1, max(plan.runs, MIN_BASELINE_RUNS if plan.naive else 1) + 1):
        if number <= plan.runs:
            for scenario, tree in trees.items():
                home = workdir / f"{scenario}-{number}"
                results[scenario].append(record(scenario, lambda h, t=tree: run_orch_up(h, t), home))
                if number == 1:  # the second start, over the first one's data
                    again = "existing" if scenario == "fresh" else f"{scenario}-existing"
                    results[again].append(record(again, lambda h, t=tree: run_orch_up(h, t), home))
            results["prefect"].append(record("prefect", run_prefect_alone, workdir / f"prefect-{number}"))
        if plan.naive:
            results["naive"].append(record("naive", run_naive, workdir / f"naive-{number}"))
    if plan.load_minutes > 0:
        for scenario, tree in trees.items():
            loaded[scenario] = record(scenario, lambda h, t=tree: run_orch_up(h, t, plan.load_minutes, plan.load_rate),
                                      workdir / f"{scenario}-load")
    return results, loaded


def cli_help_seconds(repeats: int = 10) -> dict[str, dict[str, float]]:
    """``orch --help`` must stay well under a second (lazy imports); ``prefect --help`` beside it is
    the eager-import CLI an operator would otherwise type."""
    timings: dict[str, dict[str, float]] = {}
    for name in ("orch", "prefect"):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([str(BIN / name), "--help"], capture_output=True, check=True, env=clean_environ())
            seconds.append(time.perf_counter() - started)
        timings[name] = spread(seconds)
    return timings


def cli_help_lines(timings: dict[str, dict[str, float]]) -> list[str]:
    return ["CLI start (`--help`, median of 10, s): " + ", ".join(
        f"`{name} --help` {t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f})" for name, t in timings.items()), ""]


def write_report(results: dict[str, list[RunResult]], loaded: dict[str, RunResult], machine: dict[str, object],
                 plan: Plan, out: Path, cli_help: dict[str, dict[str, float]]) -> str:
    components = component_names(results)
    summaries = {key: summarize(runs, components) for key, runs in results.items() if runs}
    counts = {key: len(runs) for key, runs in results.items()}
    table = markdown(summaries, components, machine, counts, loaded) + "\n".join(cli_help_lines(cli_help))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_startup.md").write_text(table, encoding="utf-8")
    report = {"machine": machine, "runs_requested": plan.runs,
              "compare_tree": str(plan.compare_tree) if plan.compare_tree else None,
              "goals": {"healthy_s": GOAL_HEALTHY_S, "rss_orch_own_mb": GOAL_OWN_RSS_MB, "stop_s": GOAL_STOP_S},
              "cli_help_s": cli_help,
              "scenarios": {key: {"label": SCENARIOS[key], "summary": summaries[key],
                                  "runs": [r.as_json() for r in results[key]]} for key in summaries},
              "load": {key: run.as_json() for key, run in loaded.items()}}
    (out / "bench_startup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3,
                        help=f"fresh starts and baseline starts (default 3; baseline at least {MIN_BASELINE_RUNS})")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="report directory")
    parser.add_argument("--load-minutes", type=float, default=0.0,
                        help="one more start kept busy this long, RSS sampled every 30 s (default 0: none)")
    parser.add_argument("--load-rate", type=float, default=5.0, help="single dispatches per second under load")
    parser.add_argument("--compare-tree", type=Path, default=None,
                        help="another copy of the source tree whose `orch up` runs beside this one's")
    parser.add_argument("--tree", type=Path, default=None,
                        help="the source tree of the main `orch up` runs (default: the installed one)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the hand-stitched baseline")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.load_minutes < 0 or args.load_rate <= 0:
        parser.error("--load-minutes must be >= 0 and --load-rate > 0")
    for tree in (args.tree, args.compare_tree):
        if tree is not None and not (tree / "orch" / "stack" / "up.py").is_file():
            parser.error(f"{tree} holds no orch/stack/up.py")
    missing = [name for name in ("orch", "prefect") if not (BIN / name).is_file()]
    if missing:
        parser.error(f"{', '.join(missing)} not found next to {sys.executable}; run it with the project's venv")

    plan = Plan(runs=args.runs, compare_tree=args.compare_tree.resolve() if args.compare_tree else None,
                naive=not args.skip_naive, tree=args.tree.resolve() if args.tree else None,
                load_minutes=args.load_minutes, load_rate=args.load_rate)
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        warm_page_cache()
        results, loaded = bench(plan, workdir)
        cli_help = cli_help_seconds()
    except BenchError as exc:
        print(f"error: {exc}\n(data and logs kept in {workdir})", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    print(write_report(results, loaded, machine, plan, args.out, cli_help))
    return 0


if __name__ == "__main__":
    sys.exit(main())
