"""``orch up``: the whole local stack in one foreground command.

Start order (measured, see docs/benchmarks.md "Start-up"): the Prefect server and the ORCH API start
together; the deployment applier starts at once too and waits for the server itself, so its ~2 s of imports
overlap the server's boot; the worker starts when the server is ready. A component that dies after start-up
is restarted with backoff; one that keeps dying stops the stack with its last log line. Ctrl-C / SIGTERM
stop everything in dependency order: the API and the worker (whose dispatcher stops claiming, hands back the
tasks still running after a second and reports its run's final state) first, the Prefect server last, once
they have all exited, because they report to it as they stop (stopped together, the worker retried against a
closed port and was killed after the grace). Idle, that takes about 1-2 s (scripts/bench_startup.py);
nothing waits for the 7 s grace unless something hangs.
"""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orch.config.loader import CONFIG_PATH_ENV, HOME_ENV, project_home, read_environ
from orch.config.local_secrets import PREFECT_AUTH_KEY, SECRETS_FILE
from orch.config.schema import PrefectSettings, Settings
from orch.errors import OrchError
from orch.stack.first_run import first_run_lines
from orch.stack.pools import INPROCESS_POOL, PROCESS_POOL
from orch.stack.preflight import ensure_port_free, ensure_writable_dir
from orch.stack.supervisor import Component, Running, Supervisor

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0
MAX_RESTARTS = 5
# Prefect's task-run recorder writes one row at a time by default; batching keeps a burst of task runs
# from stalling later runs (the project's reference measurements: 2,000 task runs recorded in 24 s instead
# of 68 s). The flush interval must be a whole number of seconds: Prefect 3.9 truncates it with int(), and 0.5 became
# asyncio.sleep(0), a loop that kept the server at 100 % of a core even when idle.
PREFECT_TUNING = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


class StackError(OrchError):
    """The stack could not start or keep running; the message is one line."""


@dataclass(frozen=True)
class StackUrls:
    prefect_api: str
    prefect_ui: str | None
    orch_api: str

    @property
    def docs(self) -> str:
        return f"{self.orch_api}/docs"


def plan_urls(settings: Settings) -> StackUrls:
    external = settings.prefect.api_url is not None
    api = settings.prefect.resolved_api_url()
    ui = None if external else f"http://{settings.prefect.server_host}:{settings.prefect.server_port}"
    return StackUrls(api, ui, f"http://{settings.api.host}:{settings.api.port}")


def child_environment(settings: Settings, config_path: str | None) -> dict[str, str]:
    """Everything the children must agree on: where ORCH lives, its config, and the Prefect API."""
    home = project_home()
    env = read_environ(home)
    env[HOME_ENV] = str(home)
    if config_path:
        env[CONFIG_PATH_ENV] = str(Path(config_path).resolve())
    env["PREFECT_API_URL"] = settings.prefect.resolved_api_url()
    if settings.prefect.auth_string is not None:
        # The server child checks the SERVER variable, every client (worker, flows, `prefect deploy`)
        # sends the other; both from the settings, so a string given to `orch up` reaches every child.
        auth = settings.prefect.auth_string.get_secret_value()
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        env["PREFECT_API_AUTH_STRING"] = auth
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(settings.prefect.worker_poll_seconds))
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # Prefect's minimum: a zombie run shows in 90 s
    for key, value in PREFECT_TUNING.items():
        env.setdefault(key, value)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if settings.prefect.api_url is None:
        env.setdefault("PREFECT_HOME", str(Path(settings.data_dir) / "prefect"))
    # ORCH's own loggers inside flow runs are shipped to Prefect, so they appear in the run's logs in the UI.
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "orch,flows,tasks,blocks,deployments")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def components(settings: Settings, env: dict[str, str], pool: str) -> dict[str, Component]:
    bin_dir = Path(sys.executable).parent
    prefect = str(bin_dir / "prefect")
    found = {
        "api": Component("api", [sys.executable, "-m", "orch.api.server"], env, PROJECT_ROOT),
        "deployments": Component("deployments", [sys.executable, "-m", "deployments.apply"], env,
                                 PROJECT_ROOT, oneshot=True),
        # Prefect's process worker and ORCH's dispatcher share one process (one Prefect import).
        "worker": Component("worker", [sys.executable, "-m", "orch.stack.worker", "--pool", pool,
                                       "--name", f"orch-worker-{socket.gethostname()}"], env, PROJECT_ROOT),
    }
    if settings.prefect.api_url is None:
        found["prefect-server"] = Component(
            "prefect-server",
            [prefect, "server", "start", "--host", settings.prefect.server_host,
             "--port", str(settings.prefect.server_port), "--analytics-off"],
            env, PROJECT_ROOT)
    return found


def run_stack(settings: Settings, config_path: str | None, say: Callable[[str], None]) -> int:
    """Run until a signal; 0 after a clean stop, raises :class:`StackError` when it cannot run."""
    from deployments.apply import deployment_names

    started = time.monotonic()
    data_dir = Path(settings.data_dir)
    ensure_writable_dir(data_dir, "data directory")
    log_dir = data_dir / "logs"
    ensure_writable_dir(log_dir, "log directory")
    ensure_port_free(settings.api.host, settings.api.port, "ORCH API", "ORCH_PORT")
    if settings.prefect.api_url is None:
        ensure_port_free(settings.prefect.server_host, settings.prefect.server_port, "Prefect server",
                         "PREFECT_SERVER_API_PORT")
    env = child_environment(settings, config_path)
    say("database " + _initialise_database(env))

    pool = PROCESS_POOL
    urls = plan_urls(settings)
    plan = components(settings, env, pool)
    supervisor = Supervisor(log_dir)
    stop = _install_signal_handlers()
    try:
        for name in ("prefect-server", "api", "deployments"):
            if name in plan:
                supervisor.start(plan[name])
        _wait(lambda: _prefect_ready(settings.prefect), supervisor, stop, "Prefect server", started)
        supervisor.start(plan["worker"])
        _wait(lambda: _all_up(urls, settings.prefect, pool, supervisor), supervisor, stop, "the stack", started)
        if stop.is_set():
            return 0
        say(f"ORCH-Next is up in {time.monotonic() - started:.1f} s")
        if urls.prefect_ui:
            say(f"  Prefect UI:   {urls.prefect_ui}   (login: {_auth_source(settings)})")
        say(f"  Prefect API:  {urls.prefect_api}")
        say(f"  ORCH API:     {urls.orch_api}   (docs: {urls.docs})")
        say(f"  Deployments:  {', '.join(deployment_names())} (work pools {pool}, {INPROCESS_POOL})")
        say(f"  Logs:         {log_dir}")
        for line in first_run_lines(settings):  # the console, the first admin, `prefect deployment run`
            say(line)
        say("Press Ctrl-C to stop.")
        _watch(plan, supervisor, stop, say)
        return 0
    finally:
        t0 = time.monotonic()
        leftovers = supervisor.stop_all(on_progress=say, last=("prefect-server",))
        say(f"stopped in {time.monotonic() - t0:.1f} s"
            + (f"; could not stop pids {leftovers}" if leftovers else ""))
        # The process exits next: exempt its heap from the final collection, which measured 0.4 s of the
        # stop (every object of typer, pydantic and the settings walked once more only to be freed).
        gc.freeze()


def _initialise_database(env: dict[str, str]) -> str:
    """``orch db init`` in a short-lived child: the supervisor stays small (no SQLAlchemy/Alembic
    resident for hours, about 30 MB) and the stack migrates exactly as an operator would."""
    result = subprocess.run([sys.executable, "-m", "orch.cli.main", "db", "init"], env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or [f"exit {result.returncode}"]
        raise StackError(lines[-1].removeprefix("error: "))
    return result.stdout.strip()


def _install_signal_handlers() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _auth_source(settings: Settings) -> str:
    """Where the operator finds the string the Prefect UI asks for (never the string itself)."""
    return (f'PREFECT_API_AUTH_STRING if you set it, else "{PREFECT_AUTH_KEY}" in '
            f"{Path(settings.data_dir) / SECRETS_FILE}")


def _prefect_ready(prefect: PrefectSettings) -> bool:
    from orch.prefect_api import prefect_readiness

    return prefect_readiness(prefect, timeout=2).ready


def _all_up(urls: StackUrls, prefect: PrefectSettings, pool: str, supervisor: Supervisor) -> bool:
    from orch.http import http_client
    from orch.prefect_api import online_workers

    applied = supervisor.running.get("deployments")
    if applied is not None and applied.process.poll() is None:
        return False
    try:
        with http_client(2) as client:
            if client.get(f"{urls.orch_api}/healthz").status_code != 200:
                return False
    except Exception:  # noqa: BLE001 - not up yet, whatever the reason
        return False
    return online_workers(prefect, pool) > 0 and online_workers(prefect, INPROCESS_POOL) > 0


def _wait(ready: Callable[[], bool], supervisor: Supervisor, stop: threading.Event, what: str,
          started: float) -> None:
    """Poll ``ready`` until true, failing fast with the log line of any component that died."""
    while not stop.is_set():
        for running in supervisor.exited():
            _fail_if_died(running, supervisor)
        if ready():
            return
        if time.monotonic() - started > START_TIMEOUT:
            raise StackError(f"{what} not healthy after {START_TIMEOUT:.0f} s (see {supervisor.log_dir})")
        stop.wait(0.25)


def _fail_if_died(running: Running, supervisor: Supervisor) -> None:
    code = running.process.returncode
    name = running.component.name
    if running.component.oneshot and code == 0:
        supervisor.forget(name)
        return
    tail = supervisor.log_tail(name, 1)
    raise StackError(f"{name} exited with code {code}: {tail[-1] if tail else 'no output'} "
                     f"(log: {supervisor.log_dir / (name + '.log')})")


def _watch(plan: dict[str, Component], supervisor: Supervisor, stop: threading.Event,
           say: Callable[[str], None]) -> None:
    """Restart long-running components that die, with backoff; give up after MAX_RESTARTS in a row."""
    while not stop.wait(1.0):
        for running in supervisor.exited():
            name = running.component.name
            if running.component.oneshot:
                _fail_if_died(running, supervisor)
                continue
            stable = time.monotonic() - running.started > 300
            restarts = 0 if stable else running.restarts + 1
            if restarts > MAX_RESTARTS:
                _fail_if_died(running, supervisor)
            delay = min(30.0, 2.0 ** restarts)
            tail = supervisor.log_tail(name, 1)
            say(f"{name} exited with code {running.process.returncode} "
                f"({tail[-1] if tail else 'no output'}); restarting in {delay:.0f} s")
            supervisor.forget(name)
            if stop.wait(delay):
                return
            supervisor.start(plan[name], restarts=restarts)
