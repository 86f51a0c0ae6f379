"""``orch up``: the whole local stack in one foreground command.

Two halves in one process (one pid, which is what an operator, systemd or a test signals). The ``orch``
CLI loads and checks the configuration (pydantic), checks the data directory and the ports, writes the
plan of the stack to an unlinked temporary file and replaces itself (``exec``) with
``python -m orch.stack.up``: the supervisor that then runs for hours holds neither typer, pydantic,
SQLAlchemy, httpx nor Prefect (tests/test_startup_imports.py keeps it so); its HTTP questions to the
stack are ``http.client``'s.

Start order (measured, see scripts/bench_startup.py): at once the Prefect server, the deployment applier
(which waits for the server itself; over unchanged data it only checks the server and exits, see
deployments/applied.py), the worker under :mod:`orch.stack.prestart` (its
Prefect imports overlap the server's boot) and ``orch db init`` in a short-lived child; the API once the
database is at its schema; the worker is released once the Prefect server is ready. A component that dies
after start-up is restarted with backoff; one that keeps dying stops the stack with its last log line.
Ctrl-C / SIGTERM stop everything in dependency order: the API and the worker (whose dispatcher stops
claiming, hands back the tasks still running after a second and reports its run's final state) first,
the Prefect server last, once they have all exited, because they report to it as they stop (stopped
together, the worker retried against a closed port and was killed after the grace). Idle, that takes
about 1-2 s; nothing waits for the 7 s grace unless something hangs.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from orch.errors import OrchError
from orch.stack.pools import INPROCESS_POOL, PROCESS_POOL
from orch.stack.supervisor import Component, Running, Supervisor

if TYPE_CHECKING:
    from orch.config.schema import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0
MAX_RESTARTS = 5
# Prefect's task-run recorder writes one row at a time by default; batching keeps a burst of task runs
# from stalling later runs (the project's reference measurements: 2,000 task runs recorded in 24 s instead
# of 68 s). The flush interval must be a whole number of seconds: Prefect 3.9 truncates it with int(), and 0.5 became
# asyncio.sleep(0), a loop that kept the server at 100 % of a core even when idle.
# Its event persister writes every 20 events by default (or every 5 s), and on SQLite each of those writes
# held up the server's other writers: the 13 deployments of a first apply took 2.2-2.8 s on a bare server, 0.5 s
# with 500 (docs/benchmarks.md#start-up); events still reach the database within the 5 s flush interval.
PREFECT_TUNING = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
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
    from orch.config.loader import CONFIG_PATH_ENV, HOME_ENV, project_home, read_environ

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
    # glibc gives threads their own malloc arenas (up to 8 per core), each keeping what it freed; the worker
    # runs a thread per task run. Two arenas, which cost nothing measurable under the GIL: in one 10-minute
    # load run each (bench_startup.py --load-minutes 10) the worker grew 26 MB with them, 32 MB without.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def components(settings: Settings, env: dict[str, str], pool: str) -> dict[str, Component]:
    """What each component runs (the systemd units run the same, see infra/)."""
    found = {
        "api": Component("api", [sys.executable, "-m", "orch.api.server"], env, PROJECT_ROOT),
        "deployments": Component("deployments", [sys.executable, "-m", "deployments.apply"], env,
                                 PROJECT_ROOT, oneshot=True),
        # Prefect's process worker and ORCH's dispatcher share one process (one Prefect import).
        "worker": Component("worker", [sys.executable, "-m", "orch.stack.worker", "--pool", pool,
                                       "--name", f"orch-worker-{socket.gethostname()}"], env, PROJECT_ROOT,
                            nice=settings.dispatch.execution_nice),
    }
    if settings.prefect.api_url is None:
        found["prefect-server"] = Component(
            "prefect-server",
            [sys.executable, "-m", "orch.stack.prefect_cli", "server", "start", "--host", settings.prefect.server_host,
             "--port", str(settings.prefect.server_port), "--analytics-off"],
            env, PROJECT_ROOT, nice=settings.dispatch.execution_nice)
    return found


# What a gated component imports while it waits (:mod:`orch.stack.prestart`): the worker's Prefect
# worker classes and ORCH's in-process worker and dispatcher, the API's application. The API waits for
# the database to be at its schema, the worker for the deployments to be applied (so for the Prefect server too).
PRESTART_IMPORTS = {
    "worker": ("prefect.workers.process", "orch.stack.inprocess", "orch.dispatch.service", "orch.monitoring.zombies"),
    "api": ("orch.api.app",),
}


def prestarted(component: Component, imports: tuple[str, ...]) -> Component:
    """``python -m MODULE ARGS`` as ``python -m orch.stack.prestart --import ... -- MODULE ARGS``, gated."""
    python, dash_m, module, *args = component.argv
    assert dash_m == "-m", component.argv
    ahead = [part for name in imports for part in ("--import", name)]
    return Component(component.name, [python, "-m", "orch.stack.prestart", *ahead, "--", module, *args],
                     component.env, component.cwd, component.oneshot, gated=True, nice=component.nice)


@dataclass
class StackPlan:
    """All the supervisor needs, computed by the CLI half from the settings (plain data: no pydantic)."""

    started: float  # time.monotonic() when `orch up` began: one clock for both halves on one host
    log_dir: str
    env: dict[str, str]
    components: dict[str, dict[str, Any]]
    db_init: list[str]
    prefect_api: str
    prefect_auth: str | None  # the Authorization header value ORCH's calls to Prefect send
    orch_api: str
    pools: list[str]
    up_lines: list[str]  # printed under "ORCH-Next is up in ..."
    console_line: str
    prefect_cli_line: str
    database_json: str  # for the first-admin question (python -m orch.stack.first_run)
    gated: dict[str, str] = field(default_factory=dict)  # component: what releases it ("database", "deployments")


def run_stack(settings: Settings, config_path: str | None) -> NoReturn:
    """Check what an operator can fix (one-line :class:`StackError` / preflight errors), then become the
    supervisor: this process is replaced, its pid kept; it exits 0 after a clean stop."""
    plan = plan_stack(settings, config_path, time.monotonic())
    if settings.prefect.api_url is None:
        _seed_prefect_database(plan.env, Path(settings.data_dir) / "prefect")
    with tempfile.TemporaryFile(prefix="orch-up-") as handle:  # unlinked: the plan holds secrets
        handle.write(json.dumps(asdict(plan)).encode("utf-8"))
        handle.flush()
        handle.seek(0)
        os.set_inheritable(handle.fileno(), True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "orch.stack.up", "--plan-fd", str(handle.fileno())])


def _seed_prefect_database(env: dict[str, str], prefect_home: Path) -> None:
    """A new Prefect database starts as a copy of this environment's migrated template (when there is one):
    the server then skips Prefect's migration history, a third of a fresh start (orch.stack.prefect_template)."""
    from orch.stack.prefect_template import TemplateUnusable, seed, seedable, template_path

    try:
        if seedable(env, prefect_home, PROJECT_ROOT) and seed(prefect_home):
            print(f"Prefect database {prefect_home / 'prefect.db'}: created from {template_path().name}", flush=True)
    except TemplateUnusable as exc:
        print(f"warning: {exc}", flush=True)


def plan_stack(settings: Settings, config_path: str | None, started: float) -> StackPlan:
    from orch.deployment_spec import deployment_names, deployment_spec
    from orch.stack.first_run import console_url, prefect_exports
    from orch.stack.preflight import ensure_port_free, ensure_writable_dir

    data_dir = Path(settings.data_dir)
    ensure_writable_dir(data_dir, "data directory")
    log_dir = data_dir / "logs"
    ensure_writable_dir(log_dir, "log directory")
    ensure_port_free(settings.api.host, settings.api.port, "ORCH API", "ORCH_PORT")
    if settings.prefect.api_url is None:
        ensure_port_free(settings.prefect.server_host, settings.prefect.server_port, "Prefect server",
                         "PREFECT_SERVER_API_PORT")
    env = child_environment(settings, config_path)
    urls = plan_urls(settings)
    plan = components(settings, env, PROCESS_POOL)
    plan["worker"] = prestarted(plan["worker"], PRESTART_IMPORTS["worker"])
    plan["api"] = prestarted(plan["api"], PRESTART_IMPORTS["api"])
    lines = []
    if urls.prefect_ui:
        lines.append(f"  Prefect UI:   {urls.prefect_ui}   (login: {_auth_source(settings)})")
    lines += [f"  Prefect API:  {urls.prefect_api}",
              f"  ORCH API:     {urls.orch_api}   (docs: {urls.docs})",
              f"  Deployments:  {', '.join(deployment_names(deployment_spec(settings)))} "
              f"(work pools {PROCESS_POOL}, {INPROCESS_POOL})",
              f"  Logs:         {log_dir}"]
    auth = settings.prefect.auth_string
    return StackPlan(
        started=started, log_dir=str(log_dir), env=env,
        components={name: {"argv": c.argv, "cwd": str(c.cwd), "oneshot": c.oneshot, "gated": c.gated,
                                "nice": c.nice}
                    for name, c in plan.items()},
        db_init=[sys.executable, "-m", "orch.cli.main", "db", "init"],
        prefect_api=urls.prefect_api,
        prefect_auth=None if auth is None else
        "Basic " + base64.b64encode(auth.get_secret_value().encode("utf-8")).decode("ascii"),
        orch_api=urls.orch_api, pools=[PROCESS_POOL, INPROCESS_POOL], up_lines=lines,
        console_line=f"  Console:      {console_url(settings)}",
        prefect_cli_line=f"  Prefect CLI:  {prefect_exports(settings)}   (then: prefect deployment run "
                         "<flow>/<deployment>)",
        database_json=settings.database.model_dump_json(),
        gated={"api": "database", "worker": "deployments"})


def _auth_source(settings: Settings) -> str:
    """Where the operator finds the string the Prefect UI asks for (never the string itself)."""
    from orch.config.local_secrets import PREFECT_AUTH_KEY, SECRETS_FILE

    return (f'PREFECT_API_AUTH_STRING if you set it, else "{PREFECT_AUTH_KEY}" in '
            f"{Path(settings.data_dir) / SECRETS_FILE}")


# --- the supervisor half: stdlib, psutil and orch.stack.supervisor only ---------------------------------

def supervise(plan: StackPlan, say: Callable[[str], None]) -> int:
    """Run until a signal; 0 after a clean stop, raises :class:`StackError` when it cannot run."""
    comps = {name: Component(name, spec["argv"], plan.env, Path(spec["cwd"]), spec["oneshot"], spec["gated"],
                           spec["nice"])
             for name, spec in plan.components.items()}
    supervisor = Supervisor(Path(plan.log_dir))
    stop = _install_signal_handlers()
    released: set[str] = set()
    try:
        for name in ("prefect-server", "deployments", "worker", "api"):
            if name in comps:
                supervisor.start(comps[name])
        say("database " + _initialise_database(plan.db_init, plan.env))
        admin = _FirstAdmin(plan)
        _release(supervisor, plan, "database", released)
        _wait(lambda: _prefect_ready(plan), supervisor, stop, "Prefect server", plan.started)
        # The worker waits for the deployments: its start (pools, its host's queue and sweep, the dispatch run)
        # and the applier's calls both load a server that has just started, and the applier was the slower.
        _wait(lambda: _applied(supervisor), supervisor, stop, "deployments", plan.started)
        _release(supervisor, plan, "deployments", released)
        _wait(lambda: _all_up(plan), supervisor, stop, "the stack", plan.started)
        if stop.is_set():
            return 0
        say(f"ORCH-Next is up in {time.monotonic() - plan.started:.1f} s")
        for line in [*plan.up_lines, plan.console_line, *admin.lines(), plan.prefect_cli_line]:
            say(line)
        say("Press Ctrl-C to stop.")
        _watch(comps, supervisor, stop, say)
        return 0
    finally:
        t0 = time.monotonic()
        leftovers = supervisor.stop_all(on_progress=say, last=("prefect-server",))
        say(f"stopped in {time.monotonic() - t0:.1f} s"
            + (f"; could not stop pids {leftovers}" if leftovers else ""))


def _release(supervisor: Supervisor, plan: StackPlan, ready: str, released: set[str]) -> None:
    """Release the gated components waiting for ``ready`` (and remember it for their restarts)."""
    released.add(ready)
    for name, waits_for in plan.gated.items():
        if waits_for == ready:
            supervisor.release(name)


def _initialise_database(argv: list[str], env: dict[str, str]) -> str:
    """``orch db init`` in a short-lived child: the supervisor stays small (no SQLAlchemy/Alembic
    resident for hours) and the stack migrates exactly as an operator would."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or [f"exit {result.returncode}"]
        raise StackError(lines[-1].removeprefix("error: "))
    return result.stdout.strip()


class _FirstAdmin:
    """Whether an active admin exists, asked in a child (``python -m orch.stack.first_run``, the database
    settings on its stdin) while the stack starts; its line is printed under "ORCH-Next is up"."""

    HINT = "orch user create-admin --username admin (asks for the password)"

    def __init__(self, plan: StackPlan) -> None:
        self._answer: bool | None = None
        self._thread = threading.Thread(target=self._ask, args=(plan,), daemon=True)
        self._thread.start()

    def _ask(self, plan: StackPlan) -> None:
        try:
            result = subprocess.run([sys.executable, "-m", "orch.stack.first_run"], input=plan.database_json,
                                    env=plan.env, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return
        if result.returncode == 0:
            self._answer = {"admin": True, "no admin": False}.get(result.stdout.strip())

    def lines(self) -> list[str]:
        self._thread.join(timeout=10)
        if self._answer is None:
            return [f"  First admin:  if there is none yet: {self.HINT}"]
        return [] if self._answer else [f"  First admin:  there is none yet: {self.HINT}"]


def _request(plan: StackPlan, method: str, url: str, body: object = None, auth: bool = True) -> tuple[int, Any]:
    """(HTTP status, JSON body) of one request; (0, None) when nothing answered. ``http.client``: httpx
    would be ~7 MB of the supervisor's memory for a few polls at start-up."""
    parts = urllib.parse.urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname or "127.0.0.1", parts.port, timeout=2)
    headers = {"Content-Type": "application/json"}
    if auth and plan.prefect_auth:
        headers["Authorization"] = plan.prefect_auth
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                           body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, None
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        connection.close()


def _prefect_ready(plan: StackPlan) -> bool:
    """``/ready`` answers 200 and the server accepts ORCH's auth string (a wrong one would look ready)."""
    api = plan.prefect_api.rstrip("/")
    if _request(plan, "GET", api + "/ready", auth=False)[0] != 200:
        return False
    return _request(plan, "GET", api + "/admin/version")[0] not in (0, 401)


def _online_workers(plan: StackPlan, pool: str) -> int:
    status, workers = _request(plan, "POST", f"{plan.prefect_api.rstrip('/')}/work_pools/{pool}/workers/filter", {})
    if status != 200 or not isinstance(workers, list):
        return 0
    return sum(1 for worker in workers if worker.get("status") == "ONLINE")


def _applied(supervisor: Supervisor) -> bool:
    """The deployments applier has ended (how: :func:`_wait` reports a failure before this is asked)."""
    applied = supervisor.running.get("deployments")
    return applied is None or applied.process.poll() is not None


def _all_up(plan: StackPlan) -> bool:
    if _request(plan, "GET", f"{plan.orch_api}/healthz", auth=False)[0] != 200:
        return False
    return all(_online_workers(plan, pool) > 0 for pool in plan.pools)


def _install_signal_handlers() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


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
        stop.wait(0.1)


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
    """Restart long-running components that die, with backoff; give up after MAX_RESTARTS in a row.
    A restarted gated component is released at once: what it waited for is ready by now."""
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
            supervisor.release(name)


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> NoReturn:
    """The supervisor half's entry: ``python -m orch.stack.up --plan-fd N`` (exec'd by :func:`run_stack`)."""
    if len(argv) != 2 or argv[0] != "--plan-fd":
        raise SystemExit("usage: python -m orch.stack.up --plan-fd N (started by `orch up`)")
    with os.fdopen(int(argv[1]), "rb") as handle:
        plan = StackPlan(**json.loads(handle.read()))
    try:
        code = supervise(plan, _say)
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # nothing left to tear down: skip the interpreter's own exit


if __name__ == "__main__":
    main(sys.argv[1:])
