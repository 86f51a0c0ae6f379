"""Hosts as Linux network namespaces on one machine: the topology of issue 18's real-host test and benchmark.

Why namespaces: a process of one "host" must reach the others only through an address on a link that can
be cut, with nothing shared on loopback, and a host must be losable as a machine is lost (its link down, its
processes frozen). Each host is a network namespace with its own loopback, one veth (``eth0``) to a bridge
that lives in a switch namespace of its own, and its own UTS namespace per process (so its hostname, and
with it every lease owner and executor label its processes write, is the host's). The caller (the test
process, in the root namespace) reaches the hosts through one more veth from the root namespace to the
bridge; that end carries the only address outside the topology's namespaces, in a /24 no route of this
machine uses yet. Every name carries a run id, so runs side by side do not meet.

Host ``a`` runs PostgreSQL (a cluster of its own, ``initdb`` + ``pg_ctl`` as the postgres user), Redis (no
persistence) and the Prefect server on PostgreSQL with an auth string, as ``orch/stack`` starts it; worker
hosts run ORCH's worker (dispatcher + both in-process pools) and an API, each with its own
``monitoring.host_name``. :meth:`Topology.close` kills every process in every namespace (thawing frozen
ones), stops PostgreSQL and deletes the namespaces and links, whatever state the run ended in.

Used by tests/test_netns_hosts.py and scripts/bench_hosts.py (which puts this directory on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from workers import stop_child

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PREFECT = str(Path(sys.executable).with_name("prefect"))
PG_PORT, REDIS_PORT, PREFECT_PORT, API_PORT = 5432, 6379, 4200, 8000
SUBNET_PREFIX = "10.231"  # 10.231.<n>.0/24, <n> unused by any route of this machine
ROOT_HOST = 254  # the caller's address in the subnet
LINK = "eth0"  # every host's link to the bridge
SKEW_PROBE = 60  # seconds: the skew clock_offset checks
IDLE_IN_TRANSACTION = 5.0  # seconds: database.idle_transaction_timeout, no more than the test's lease
OPERATOR, PASSWORD = "netns-operator", "Netns-H0st-Passw0rd!"
SECRETS = {"JWT_SECRET": "netns-jwt-secret-0123456789abcdef", "WEBHOOK_SECRET": "netns-webhook-0123456789abcdef",
           "ORCH_MCP_TOKEN": "netns-mcp-token-0123456789abcdef"}


class TopologyError(RuntimeError):
    """The topology could not be built or a part of it did not come up; the message names which."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


def cannot_create_namespaces() -> str | None:
    """Why this machine cannot build the topology (tried, not guessed), or None when it can."""
    for tool in ("ip", "unshare", "redis-server", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    probe = f"orchprobe{uuid.uuid4().hex[:6]}"
    try:
        made = run("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        veth = run("ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
        uts = run("ip", "netns", "exec", probe, "unshare", "--uts", "--", "hostname", "probe", check=False)
        if uts.returncode != 0:
            return f"cannot give a process its own hostname: {uts.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


def clean_environ() -> dict[str, str]:
    """This process's environment without anything naming another server, database or ORCH home."""
    from orch.config.sources import ENV_ALIASES

    aliases = {name for name, _ in ENV_ALIASES}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "ORCH_", "FAKETIME", "LD_PRELOAD")) and k not in aliases}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"})
    return env


def _free_subnet() -> int:
    """A third octet whose 10.231.<n>.0/24 overlaps no route of the root namespace."""
    routes = run("ip", "-4", "route", "show", "table", "all").stdout
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    candidates = [n for n in range(1, 254) if not any(
        ipaddress.ip_network(f"{SUBNET_PREFIX}.{n}.0/24").overlaps(net) for net in used if net.prefixlen > 0)]
    if not candidates:
        raise TopologyError(f"every {SUBNET_PREFIX}.<n>.0/24 is routed on this machine")
    return secrets.choice(candidates)


@dataclass
class Host:
    """One "machine": its namespace, its address, and what it runs."""

    name: str
    netns: str
    address: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{API_PORT}"


@dataclass
class Topology:
    """Namespaces, links and the processes in them; build with :meth:`build`, always end with :meth:`close`."""

    workdir: Path
    host_names: tuple[str, ...] = ("a", "b", "c")
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: int = 0
    auth: str = field(default_factory=lambda: f"orch-netns:{secrets.token_urlsafe(24)}")
    pg_data: Path | None = None
    _pg_bin: Path | None = None

    @property
    def switch(self) -> str:
        return f"orch{self.run_id}-sw"

    @property
    def root_link(self) -> str:
        return f"o{self.run_id}r"

    def address(self, index: int) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.{index}"

    @property
    def db_host(self) -> Host:
        return self.hosts[self.host_names[0]]

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{self.db_host.address}:{PG_PORT}/orch"

    @property
    def prefect_api(self) -> str:
        return f"http://{self.db_host.address}:{PREFECT_PORT}/api"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.db_host.address}:{REDIS_PORT}/0"

    # -- links -------------------------------------------------------------------------------------------

    def build(self) -> Topology:
        """The switch namespace with its bridge, one namespace per host on it, and the root's link to it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.subnet = _free_subnet()
        run("ip", "netns", "add", self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for index, name in enumerate(self.host_names, start=1):
            host = Host(name, f"orch{self.run_id}-{name}", self.address(index))
            run("ip", "netns", "add", host.netns)
            self.hosts[name] = host
            run("ip", "-n", self.switch, "link", "add", f"{name}{self.run_id}", "type", "veth", "peer", "name", LINK,
                "netns", host.netns)
            run("ip", "-n", self.switch, "link", "set", f"{name}{self.run_id}", "master", "br0", "up")
            run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", LINK)
            run("ip", "-n", host.netns, "link", "set", "lo", "up")
            run("ip", "-n", host.netns, "link", "set", LINK, "up")
        run("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "up0", "netns", self.switch)
        run("ip", "-n", self.switch, "link", "set", "up0", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.address(ROOT_HOST)}/24", "dev", self.root_link)
        run("ip", "link", "set", self.root_link, "up")
        return self

    def cut(self, name: str) -> None:
        """Lose host ``name`` as a machine is lost: its link down, then every process in it frozen."""
        host = self.hosts[name]
        run("ip", "-n", host.netns, "link", "set", LINK, "down")
        for pid in self.pids(name):
            _signal(pid, signal.SIGSTOP)

    def pids(self, name: str) -> list[int]:
        listed = run("ip", "netns", "pids", self.hosts[name].netns, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]

    # -- processes ---------------------------------------------------------------------------------------

    def argv(self, name: str, argv: list[str], *, user: str | None = None) -> list[str]:
        """``argv`` inside host ``name``: its network namespace, and a UTS namespace named after it.

        Every step execs the next, so the returned process's pid is ``argv``'s own."""
        netns = ["ip", "netns", "exec", self.hosts[name].netns]
        if user is not None:
            return [*netns, "runuser", "-u", user, "--", *argv]
        return [*netns, "unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]

    def start(self, name: str, label: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` on host ``name`` (logs to ``<workdir>/<label>.log``), in a session of its own."""
        log = self.log(label)
        with open(log, "ab") as out:
            child = subprocess.Popen(self.argv(name, argv), env=env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=PROJECT_ROOT, start_new_session=True)
        self.hosts[name].processes[label] = child
        return child

    def log(self, label: str) -> Path:
        return self.workdir / f"{label}.log"

    def tail(self, *labels: str, chars: int = 2500) -> str:
        found = labels or tuple(p.stem for p in sorted(self.workdir.glob("*.log")))
        return "\n".join(f"--- {label}\n{self.log(label).read_text(errors='replace')[-chars:]}"
                         for label in found if self.log(label).exists())

    def stop(self, name: str, label: str, timeout: float = 20) -> int | None:
        """SIGTERM one process and wait for it (SIGKILL after ``timeout``); its exit code."""
        return stop_child(self.hosts[name].processes[label], timeout)

    # -- host a's services -------------------------------------------------------------------------------

    def start_services(self, timeout: float = 180) -> None:
        """PostgreSQL (databases ``orch`` and ``prefect``), Redis and the Prefect server on host a."""
        self.start_postgres()
        self.start_redis()
        self.start_prefect(timeout)

    def start_postgres(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self._pg_bin = Path(bins[-1]).parent
        # The postgres user must reach its directory: under a 0700 pytest tmp dir it could not.
        base = Path(tempfile.mkdtemp(prefix=f"orch-netns-pg-{self.run_id}-"))
        base.chmod(0o755)
        self.pg_data = base / "data"
        sockets = base / "sockets"
        sockets.mkdir()
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        run("runuser", "-u", "postgres", "--", str(self._pg_bin / "initdb"), "-D", str(self.pg_data), "--auth=trust",
            "-U", "postgres", "--no-sync", "-E", "UTF8")
        host = self.db_host
        with open(self.pg_data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET_PREFIX}.{self.subnet}.0/24 trust\n")
        options = (f"-c listen_addresses={host.address} -p {PG_PORT} -k {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        done = subprocess.run(self.argv(host.name, [str(self._pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-l",
                                                    str(base / "postgres.log"), "-w", "-t", "60", "-o", options,
                                                    "start"], user="postgres"),
                              capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise TopologyError(f"PostgreSQL did not start on host {host.name}: {done.stdout}{done.stderr}"
                                f"{(base / 'postgres.log').read_text(errors='replace')[-2000:]}")
        from sqlalchemy import create_engine, text

        from orch.storage.engine import normalise_url

        engine = create_engine(normalise_url(f"postgresql://postgres@{host.address}:{PG_PORT}/postgres"),
                               isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                for name in ("orch", "prefect"):
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    def start_redis(self) -> None:
        host = self.db_host
        child = self.start(host.name, "redis", ["redis-server", "--port", str(REDIS_PORT), "--bind", host.address,
                                                "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                           clean_environ())
        import redis

        def ping() -> bool:
            assert child.poll() is None, f"redis-server exited: {self.tail('redis')}"
            try:
                return bool(redis.Redis.from_url(self.redis_url, socket_timeout=1).ping())
            except redis.RedisError:
                return False

        _wait(ping, 30, "Redis on host a")

    def prefect_env(self, home: Path) -> dict[str, str]:
        from orch.stack.up import PREFECT_TUNING

        return {**clean_environ(), **PREFECT_TUNING, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.prefect_api,
                "PREFECT_API_AUTH_STRING": self.auth}

    def start_prefect(self, timeout: float) -> None:
        """``prefect server start`` on host a's address, on PostgreSQL, requiring the auth string."""
        import httpx

        host = self.db_host
        home = self.workdir / "prefect-a"
        home.mkdir(exist_ok=True)
        # Several hosts' workers, APIs and dispatchers share this one server: Prefect's default pool (5 + 10
        # overflow) ran dry on a loaded machine (requests waited 30 s for a connection and failed).
        env = {**self.prefect_env(home), "PREFECT_SERVER_API_AUTH_STRING": self.auth,
               "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
               "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
               "PREFECT_API_DATABASE_CONNECTION_URL":
                   f"postgresql+asyncpg://postgres@{host.address}:{PG_PORT}/prefect"}
        argv = [PREFECT, "server", "start", "--host", host.address, "--port", str(PREFECT_PORT), "--analytics-off",
                "--no-ui"]
        child = self.start(host.name, "prefect-server", argv, env)

        def ready() -> bool:
            assert child.poll() is None, f"the Prefect server exited: {self.tail('prefect-server')}"
            try:
                return httpx.get(f"{self.prefect_api}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ready, timeout, "the Prefect server on host a")

    # -- ORCH ---------------------------------------------------------------------------------------------

    def write_config(self, lease_seconds: float, interval: int, host_down_after: float,
                     targets: list[dict[str, Any]] | None = None, **dispatch: Any) -> Path:
        """The one ORCH configuration every host reads (the same checkout and file on every machine)."""
        addresses = [h.address for h in self.hosts.values()]
        config = {
            # a session lost mid-transaction is ended within a lease (the setting ORCH applies on connect)
            "database": {"url": self.database_url, "idle_transaction_timeout": IDLE_IN_TRANSACTION},
            "prefect": {"api_url": self.prefect_api},
            "api": {"trusted_hosts": [*addresses, "127.0.0.1", "localhost"]},
            "security": {"rate_limit": {"storage_url": self.redis_url, "requests_per_minute": 10_000,
                                        "burst_size": 10_000}},
            "dispatch": {"lease_seconds": lease_seconds, **dispatch},
            "monitoring": {
                "interval": interval, "host_down_after": host_down_after, "orch_targets": False,
                "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100, "disk_usage_percent": 100,
                                     "response_time_ms": 1e9, "error_rate_percent": 100,
                                     "prefect_zombie_runs": 1_000_000},
                "alerting": {"for_seconds": 0, "ewma_min_samples": 1000},
                "self_healing": {"max_retries": 1, "settle_seconds": 20, "actions": ["restart"]},
                "targets": targets or []}}
        path = self.workdir / "orch.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def orch_env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What an ORCH process on host ``name`` is started with: the shared configuration and secrets, its
        own ORCH and Prefect homes, its host name, and its API on its own address."""
        home = self.workdir / f"home-{name}"
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        return {**self.prefect_env(home / "prefect"), **SECRETS, "ORCH_HOME": str(home),
                "ORCH_CONFIG_PATH": str(self.workdir / "orch.yaml"), "ORCH_MONITORING__HOST_NAME": name,
                "ORCH_HOST": self.hosts[name].address, "ORCH_PORT": str(API_PORT), "ORCH_LOG_LEVEL": "INFO",
                "PREFECT_WORKER_QUERY_SECONDS": "2", "MALLOC_ARENA_MAX": "2", **(extra or {})}

    def settings(self) -> Any:
        from orch.config.loader import load_settings

        return load_settings(environ={**SECRETS, "ORCH_CONFIG_PATH": str(self.workdir / "orch.yaml"),
                                      "ORCH_HOME": str(self.workdir), "ORCH_MONITORING__HOST_NAME": "caller"},
                             generate_secrets=False)

    def prepare_orch(self) -> Any:
        """ORCH's schema, the operator user, the two work pools and the ``self-heal/auto`` deployment (what
        ``deployments.apply`` would make of prefect.yaml for healing; the sweeps are each worker's own)."""
        from orch.security.users import create_user
        from orch.storage.engine import session_scope
        from orch.storage.migrate import upgrade

        settings = self.settings()
        upgrade(settings.database, create_database=True)
        with session_scope(settings.database, write_lock=True) as session:
            create_user(session, username=OPERATOR, password=PASSWORD, role="operator",
                        policy=settings.security.password_policy, actor="test")
        script = ("from deployments.apply import ensure_work_pools\n"
                  "from orch.stack.pools import INPROCESS_POOL, PROCESS_POOL\n"
                  "from prefect.client.orchestration import get_client\n"
                  "from flows.self_heal import self_heal\n"
                  "ensure_work_pools([PROCESS_POOL, INPROCESS_POOL])\n"
                  "with get_client(sync_client=True) as client:\n"
                  "    client.create_deployment(client.create_flow_from_name(self_heal.name), 'auto',\n"
                  f"        work_pool_name=INPROCESS_POOL, path={str(PROJECT_ROOT)!r},\n"
                  "        entrypoint='flows/self_heal.py:self_heal',\n"
                  "        tags=['orch', 'healing'])\n")
        home = self.workdir / "home-caller"
        home.mkdir(exist_ok=True)
        done = subprocess.run([PYTHON, "-c", script], cwd=PROJECT_ROOT, env=self.prefect_env(home),
                              capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            raise TopologyError(f"could not create the work pools and self-heal/auto: {done.stderr[-2000:]}")
        return settings

    def start_worker(self, name: str, *, dispatcher: bool = True, sweep: bool = True, label: str | None = None,
                     extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """ORCH's worker on host ``name``: the dispatcher and the in-process pool (its sweep and heals)."""
        argv = [PYTHON, "-m", "orch.stack.worker", "--no-process", "--name", f"orch-worker-{name}",
                *([] if dispatcher else ["--no-dispatcher"]), *([] if sweep else ["--no-sweep"])]
        return self.start(name, label or f"worker-{name}", argv, self.orch_env(name, extra))

    def start_claimer(self, name: str, label: str, *, prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        """:data:`CLAIMER` on host ``name``, ``prefix`` (:func:`skewed_clock`) wrapping it."""
        return self.start(name, label, [*(prefix or []), PYTHON, "-c", CLAIMER], self.orch_env(name))

    def start_api(self, name: str, timeout: float = 90) -> subprocess.Popen[bytes]:
        """ORCH's API on host ``name``'s address; waits until ``/healthz`` answers there from the caller."""
        import httpx

        label = f"api-{name}"
        child = self.start(name, label, [PYTHON, "-m", "orch.api.server"], self.orch_env(name))
        url = f"{self.hosts[name].api_url}/healthz"

        def up() -> bool:
            assert child.poll() is None, f"the API on host {name} exited: {self.tail(label)}"
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, timeout, f"the API on host {name} at {url}")
        return child

    def token(self, name: str) -> str:
        import httpx

        answer = httpx.post(f"{self.hosts[name].api_url}/auth/token", data={"username": OPERATOR, "password": PASSWORD},
                            timeout=30)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    # -- teardown -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill everything the topology runs (frozen or not), stop PostgreSQL, delete namespaces and links."""
        if self.pg_data is not None and self._pg_bin is not None and self.db_host.netns:
            for pid in self.pids(self.db_host.name):  # a frozen host a cannot stop
                _signal(pid, signal.SIGCONT)
            subprocess.run(self.argv(self.db_host.name, [str(self._pg_bin / "pg_ctl"), "-D", str(self.pg_data),
                                                         "-m", "immediate", "-w", "-t", "20", "stop"], user="postgres"),
                           capture_output=True, timeout=60, check=False)
        for name in self.hosts:
            def killed(name: str = name) -> bool:
                pids = self.pids(name)
                for pid in pids:
                    _signal(pid, signal.SIGKILL)
                    _signal(pid, signal.SIGCONT)
                return not pids

            with contextlib.suppress(AssertionError):  # teardown goes on; a survivor is named below
                _wait(killed, 20, f"every process on host {name} to be gone")
            for child in self.hosts[name].processes.values():
                if child.poll() is None:
                    child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(10)
        run("ip", "link", "del", self.root_link, check=False)
        for host in self.hosts.values():
            run("ip", "netns", "del", host.netns, check=False)
        run("ip", "netns", "del", self.switch, check=False)
        if self.pg_data is not None:
            shutil.rmtree(self.pg_data.parent, ignore_errors=True)
        for host in self.hosts.values():  # what a killed ``faketime`` (skewed_clock) left in /dev/shm
            for child in host.processes.values():
                for left in glob.glob(f"/dev/shm/faketime_*_{child.pid}"):
                    Path(left).unlink(missing_ok=True)


# A process that claims and ends tasks through ORCH's own queue (the dispatcher's claim, lease and finish),
# without Prefect: the skewed process of the test. Prefect's engine cannot run under libfaketime here (its
# threads wait on condition variables with timeouts, which hang once the monotonic clock is faked, and
# time.sleep fails with EINVAL when it is not), so the skewed host runs the queue code a dispatcher runs.
CLAIMER = """
import time
from orch.config.runtime import get_settings
from orch.dispatch.lease_owner import dispatcher_id
from orch.dispatch.queue import TaskQueue

queue, owner = TaskQueue(get_settings()), dispatcher_id()
print("claiming as", owner, "at", time.time(), flush=True)
while True:
    claims = queue.claim(owner, 4)
    if not claims:
        time.sleep(0.2)
        continue
    time.sleep(max(float((claim.params or {}).get("seconds", 0)) for claim in claims))
    for claim in claims:
        queue.finish(claim, "completed", result={"by": owner})
"""


def skewed_clock(seconds: int) -> list[str]:
    """The argv prefix that runs a process with its clock ``seconds`` ahead: Debian's ``faketime`` (libfaketime).

    Its wall clock and its monotonic clock both move by the offset (the monotonic one only ever counts
    differences). Left real with FAKETIME_DONT_FAKE_MONOTONIC, Python's ``time.sleep`` fails with EINVAL
    under libfaketime, and preloaded without ``faketime``'s shared state, it hangs. ``faketime`` starts the
    process as its child: :func:`skewed_pid` finds it."""
    if shutil.which("faketime") is None:
        raise TopologyError("libfaketime's faketime is not installed (Debian package faketime)")
    return ["faketime", "-f", f"{seconds:+d}s"]


def skewed_pid(child: subprocess.Popen[bytes]) -> int:
    """The pid of the process ``faketime`` started (:func:`skewed_clock`), or 0 while there is none yet."""
    import psutil

    found = psutil.Process(child.pid).children()
    return found[0].pid if found else 0


def clock_offset(topology: Topology, name: str, settings: Any) -> float:
    """Seconds by which a process started on host ``name`` through :func:`skewed_clock` sees the clock ahead of
    the database's (what libfaketime does here, checked rather than assumed)."""
    done = subprocess.run(topology.argv(name, [*skewed_clock(SKEW_PROBE), PYTHON, "-c",
                                               "import time; time.sleep(0.01); print(time.time())"]),
                          env=clean_environ(), capture_output=True, text=True, timeout=60, check=True)
    return float(done.stdout.strip()) - database_now(settings).timestamp()


def pg_activity(settings: Any) -> str:
    """The ORCH database's sessions that are not idle: what to look at when the queue stalls."""
    from sqlalchemy import text

    from orch.storage.engine import session_scope

    with session_scope(settings.database) as session:
        rows = session.execute(text("SELECT client_addr, state, wait_event_type, left(query, 80) FROM "
                                    "pg_stat_activity WHERE datname = 'orch' AND state <> 'idle' "
                                    "AND pid <> pg_backend_pid()")).all()
    return "\n".join(str(tuple(row)) for row in rows)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    """tests/support.py's wait_until (the one waiting rule), imported late: the benchmark runs outside pytest."""
    from support import wait_until

    wait_until(predicate, timeout, what)


# -- the scenario's measurements, shared by the test and the benchmark -----------------------------------------

FINAL = ("completed", "failed", "timed_out", "cancelled")


def dispatch_burst(topology: Topology, hosts: list[str], count: int, seconds: float, batch: int = 50,
                   cores: int = 10) -> list[str]:
    """``count`` tasks through the APIs of ``hosts`` in turn (batches of ``batch``), reached on their addresses:
    each ``sleep`` for ``seconds``, or ``noop`` when ``seconds`` is 0. The task ids."""
    import httpx

    action = {"action": "sleep", "params": {"seconds": seconds}} if seconds > 0 else {"action": "noop"}
    tokens = {name: topology.token(name) for name in hosts}
    ids: list[str] = []
    for number in range(0, count, batch):
        name = hosts[(number // batch) % len(hosts)]
        tasks = [{"core_id": f"core-{(number + i) % cores}", **action} for i in range(min(batch, count - number))]
        answer = httpx.post(f"{topology.hosts[name].api_url}/dispatch/batch", json={"tasks": tasks},
                            headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=60)
        if answer.status_code != 202:
            raise TopologyError(f"POST /dispatch/batch on host {name}: {answer.status_code} {answer.text[:300]}")
        ids += [task["task_id"] for task in answer.json()["tasks"]]
    return ids


def status_counts(settings: Any, task_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import func, select

    from orch.storage.engine import session_scope
    from orch.storage.models import Task

    with session_scope(settings.database) as session:
        return dict(session.execute(select(Task.status, func.count()).where(Task.task_id.in_(task_ids))
                                    .group_by(Task.status)).all())  # type: ignore[arg-type]


def finished(settings: Any, task_ids: list[str]) -> int:
    return sum(n for status, n in status_counts(settings, task_ids).items() if status in FINAL)


def held_by(settings: Any, host: str) -> dict[str, int]:
    """Running tasks whose lease a process of ``host`` holds (lease owners start with the hostname), with the
    attempt it holds."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import Task

    with session_scope(settings.database) as session:
        return dict(session.execute(select(Task.task_id, Task.attempts).where(
            Task.status == "running", Task.lease_owner.startswith(f"{host}:"))).all())  # type: ignore[arg-type]


def database_now(settings: Any) -> Any:
    from orch.storage.engine import session_scope
    from orch.storage.types import clock_of_record

    with session_scope(settings.database) as session:
        return clock_of_record(session)


def events(settings: Any, task_ids: list[str], *types: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(task_id, type, timestamp, data) of the tasks' events of ``types``, in order."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import TaskEvent

    rows = []
    with session_scope(settings.database) as session:
        for start in range(0, len(task_ids), 500):
            rows += session.execute(select(TaskEvent.task_id, TaskEvent.event_type, TaskEvent.timestamp,
                                           TaskEvent.data).where(TaskEvent.task_id.in_(task_ids[start:start + 500]),
                                                                 TaskEvent.event_type.in_(types))
                                    .order_by(TaskEvent.event_id)).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def restarted_after(settings: Any, held: dict[str, int], since: Any) -> dict[str, float]:
    """For each task a lost host held (task id -> its attempt), seconds from ``since`` to the start of its next
    attempt elsewhere (absent while it has none)."""
    found = {}
    for task_id, _type, at, data in events(settings, list(held), "task.started"):
        if data.get("attempt", 0) > held[task_id] and task_id not in found:
            found[task_id] = (at - since).total_seconds()
    return found


def running_dispatch_runs(topology: Topology) -> list[dict[str, Any]]:
    """The Running ``dispatch`` flow runs that have labelled their executor (their dispatchers claim)."""
    import httpx
    from support import prefect_auth

    from orch.dispatch.lease_owner import EXECUTOR_LABEL

    query = {"flows": {"name": {"any_": ["dispatch"]}}, "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
    answer = httpx.post(f"{topology.prefect_api}/flow_runs/filter", json=query, headers=prefect_auth(topology.auth),
                        timeout=30)
    answer.raise_for_status()
    runs = answer.json()
    return [run for run in runs if EXECUTOR_LABEL in (run.get("labels") or {})]


def executor(run: dict[str, Any]) -> tuple[str, int]:
    """(hostname, pid) of the process that executes a flow run (its ``orch.executor`` label)."""
    from orch.dispatch.lease_owner import EXECUTOR_LABEL

    host, pid, *_ = str(run["labels"][EXECUTOR_LABEL]).split(":")
    return host, int(pid)
