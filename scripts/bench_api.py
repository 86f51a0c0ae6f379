"""API benchmark: ORCH's HTTP API under load, beside a bare FastAPI app that has nothing but the route.

Why it exists: ORCH promises an API several times the original system's published targets (REFERENCE.md):
``GET /health`` ≥ 3,000 req/s (original 1,000), ``POST /dispatch`` p95 < 25 ms at 200 req/s (original
< 500 ms), signed webhooks ≥ 1,000 events/s with p95 < 20 ms (original 200/s, < 100 ms), 2,000 SSE clients
held by one API process under 300 MB RSS (original 500 clients), and an idle API process under 150 MB.
Those figures only mean something measured on the real thing: ``python -m orch.api.server`` as a process
over a fresh SQLite database, its default logging and middleware, real sockets on loopback. The bare app
(one route per figure, same uvicorn settings, one process) is the ceiling: what FastAPI and uvicorn cost
on this machine before ORCH does anything, so the gap is ORCH's own cost.

In one invocation, side by side:

(a) idle RSS of the API process right after it answers, and of the bare app;
(b) ``GET /health`` req/s with wrk (one thread, 64 connections), ORCH and bare, and ORCH's ``/healthz``;
(c) ``POST /webhook`` events/s and latency with wrk (one thread, a few connections, closed loop), every
    delivery unique and freshly signed (replays get 409), cycled through by a Lua script; non-200 answers
    counted; bare: a POST route that parses the same bodies;
(d) ``POST /dispatch`` at a fixed 200 req/s, open loop (latency from the scheduled send time, so a stall
    cannot hide behind a late send), asyncio keep-alive sockets; bare: the same client against the bare
    POST route, which is the client's own floor;
(e) SSE: N concurrent ``GET /sse/events`` streams on raw asyncio sockets; each must get the ``retry:``
    preamble, then two dispatched tasks' ``task.created`` events; RSS of the API process while it holds
    them; bare: the same number of streams held by a route that only sends the preamble;
(f) logins: ``POST /auth/token`` one at a time (p50/p95), with the stored hash's parameters, beside the
    password hash alone in this process (argon2id as stored, and the scrypt N=2^14 it replaced);
(g) ``GET /healthz`` one request at a time on a keep-alive socket, first alone (the baseline), then while
    another client streams a 50 MB request header as fast as the server reads it, over and over; what the
    attacker got back and the API's RSS after.

Usage: ``.venv/bin/python scripts/bench_api.py [--quick] [--workers N] [--out DIR]``. Needs ``wrk``
(Debian: ``apt-get install wrk``); ``--workers`` above 1 (``api.workers``) needs Redis on 127.0.0.1:6379.
Progress goes to stderr, the markdown table to stdout and ``<out>/bench_api.md``, every figure to
``<out>/bench_api.json``. ``--quick`` is a smoke run with short phases and 200 SSE clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_common import BenchError, clean_environ, run_bench
from bench_common import machine_info as _machine_info
from bench_dispatch import (
    Processes,
    fmt,
    free_port,
    git_state,
    percentiles,
    process_usage,
    say,
    short_of,
    verdict,
    wait_until,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's bin: orch
WRK = shutil.which("wrk") or "/usr/bin/wrk"
ADMIN = "bench-admin"
PASSWORD = "Bench-Pa55word-0123!"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
DISPATCH_BODY = {"core_id": "bench-core", "action": "noop"}
START_TIMEOUT = 60.0
SETTLE_SECONDS = 2.0  # after the first answer, before idle RSS is read
SSE_OPEN_AT_ONCE = 64  # connections being opened at the same time
SSE_TIMEOUT = 120.0  # opening every stream, and every stream receiving the dispatched tasks' events
SSE_TASKS = 2
SSE_RELEASE_SECONDS = 20.0  # for the server to let go of streams whose clients closed
DISPATCH_CONNECTIONS = 64  # keep-alive connections the open-loop client sends on (enough for 200/s at 300 ms)
GOAL_HEALTH_RPS = 3_000.0
GOAL_DISPATCH_P95_MS = 25.0
GOAL_WEBHOOK_PER_S = 1_000.0
GOAL_WEBHOOK_P95_MS = 20.0
GOAL_SSE_CLIENTS = 2_000
GOAL_SSE_RSS_MB = 300.0
GOAL_IDLE_RSS_MB = 150.0
GOAL_LOGIN_P95_MS = 150.0  # issue 14: argon2id logins, one at a time (one core)
GOAL_HEALTHZ_UNDER_ATTACK_P99_MS = 100.0  # issue 14: while a client streams a 50 MB header
LOGINS = 40
ATTACK_HEADER_BYTES = 50 * 2**20
ATTACK_CHUNK = 64 * 1024
PROBE_SECONDS = 5.0  # /healthz probed one request at a time, without and then with the attack
ORIGINAL = {"health": "1,000 req/s", "dispatch": "p95 < 500 ms", "webhook": "200/s, p95 < 100 ms",
            "sse": "500 clients", "memory": "< 512 MB baseline"}

BARE_APP = '''"""The ceiling: FastAPI with only the routes measured, under ORCH's uvicorn settings, one process."""
import asyncio
import json
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhook")
async def webhook(request: Request) -> dict[str, object]:
    return {"accepted": True, "event": json.loads(await request.body()).get("event")}


@app.get("/sse")
async def sse() -> StreamingResponse:
    async def body():
        yield "retry: 3000\\n\\n"
        while True:
            await asyncio.sleep(15)
            yield ": keep-alive\\n\\n"
    return StreamingResponse(body(), media_type="text/event-stream")


uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, server_header=False,
                              timeout_graceful_shutdown=5, backlog=4096)).run()
'''

# One wrk thread (one Lua state). With BENCH_DELIVERIES set, each request is the next pre-signed delivery
# ("<X-Signature>\t<body>" per line); when they run out the thread stops rather than replay one.
# done() prints every figure as one JSON line.
WRK_SCRIPT = r'''
local path = os.getenv("BENCH_DELIVERIES")
local threads = {}
non200 = 0
exhausted = false

function setup(thread)
  table.insert(threads, thread)
end

if path then
  local deliveries = {}
  local index = 0

  function init(args)  -- after wrk.init: wrk.headers.Host is known, and wrk.format adds it only by default
    for line in io.lines(path) do
      local signature, body = line:match("^([^\t]+)\t(.*)$")
      deliveries[#deliveries + 1] = wrk.format("POST", nil, {["Host"] = wrk.headers["Host"],
        ["Content-Type"] = "application/json", ["X-Signature"] = signature}, body)
    end
  end

  function request()
    index = index + 1
    if index > #deliveries then
      exhausted = true
      wrk.thread:stop()
      index = #deliveries
    end
    return deliveries[index]
  end
  function response(status, headers, body)
    if status ~= 200 then non200 = non200 + 1 end
  end
end

function done(summary, latency, requests)
  local bad, ran_out = 0, false
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non200") or 0)
    ran_out = ran_out or thread:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, "non200": %d, ' ..
    '"exhausted": %s, "latency_ms": {"p50": %.2f, "p90": %.2f, "p95": %.2f, "p99": %.2f, "max": %.2f, ' ..
    '"mean": %.2f}}\n', summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    bad, tostring(ran_out), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
'''


@dataclass(frozen=True)
class Sizes:
    health_s: int  # wrk duration per /health run
    health_connections: int
    webhook_s: int
    webhook_connections: int  # few: a closed loop's latency is connections / throughput
    dispatch_s: float
    dispatch_rate: float  # requests/s, open loop
    sse_clients: int
    api_workers: int = 1  # api.workers; above 1 the rate limit counts in Redis, as it must


DEFAULT = Sizes(health_s=10, health_connections=64, webhook_s=10, webhook_connections=8, dispatch_s=15,
                dispatch_rate=200, sse_clients=2_000)
QUICK = Sizes(health_s=3, health_connections=64, webhook_s=3, webhook_connections=8, dispatch_s=5,
              dispatch_rate=200, sse_clients=200)
MAX_WEBHOOKS_PER_S = 20_000  # deliveries signed per second of the webhook run; running out is an error


# --- the two servers -----------------------------------------------------------------------------

@dataclass
class Server:
    """One server process under test and what was measured on it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    rss_mb: dict[str, float] = field(default_factory=dict)  # by moment: idle, after_health, ... (all processes)
    largest_rss_mb: dict[str, float] = field(default_factory=dict)  # the largest one process, by moment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> float:
        return process_usage(self.process)[0]

    def cpu(self) -> float:
        return process_usage(self.process)[1]

    def largest_rss(self) -> float:
        """The RSS of the largest one process of the server (a worker when ``api.workers`` > 1)."""
        try:
            root = psutil.Process(self.process.pid)
            return round(max(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)
        except psutil.Error:
            return 0.0

    def note_rss(self, moment: str) -> float:
        self.rss_mb[moment] = self.rss()
        self.largest_rss_mb[moment] = self.largest_rss()
        return self.rss_mb[moment]


RATE_LIMIT_REDIS = "redis://127.0.0.1:6379/4"  # for several workers, which must share the rate limit


def orch_env(home: Path, port: int, workers: int = 1) -> dict[str, str]:
    """The API's environment: a fresh home, secrets, no Prefect (``/health`` says degraded, answers 200),
    and a rate limit and a per-user stream cap that let the load through (the defaults, 100/min and 20
    streams per user, would refuse it)."""
    shared = {"ORCH_API__WORKERS": str(workers), "ORCH_SECURITY__RATE_LIMIT__STORAGE_URL": RATE_LIMIT_REDIS} \
        if workers > 1 else {}
    return {**clean_environ(), **shared, "ORCH_HOME": str(home), "ORCH_PORT": str(port),
            "JWT_SECRET": "bench-jwt-secret-0123456789abcdef", "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ORCH_MCP_TOKEN": "bench-mcp-token-0123456789abcdef",
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
            "ORCH_SECURITY__RATE_LIMIT__REQUESTS_PER_MINUTE": "1000000000",
            "ORCH_SECURITY__RATE_LIMIT__BURST_SIZE": "1000000000",
            # every stream is the bench user's; the per-user cap (20) is lifted like the rate limit
            "ORCH_API__MAX_STREAMS_PER_USER": "1000000"}


def run_cli(argv: list[str], env: dict[str, str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, check=False, env=env, input=stdin, capture_output=True, text=True,
                            timeout=120, cwd=PROJECT_ROOT)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} failed (exit {result.returncode})",
                         (result.stderr or result.stdout).splitlines()[-8:])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start(procs: Processes, name: str, argv: list[str], env: dict[str, str], port: int, probe: str) -> Server:
    process = procs.spawn(name, argv, env, PROJECT_ROOT)
    server = Server(name, process, port)
    began = time.monotonic()
    wait_until(lambda: answers(server.url + probe), START_TIMEOUT, f"{name} answering {probe}", procs.alive(name),
               procs.log(name), interval=0.1)
    say(f"{name} answers on port {port} after {time.monotonic() - began:.1f} s")
    time.sleep(SETTLE_SECONDS)
    server.note_rss("idle")
    return server


def start_orch(workdir: Path, procs: Processes, workers: int) -> tuple[Server, str]:
    """A migrated database with one admin made by the CLI, as an operator does; the API; a token."""
    home = workdir / "orch"
    home.mkdir()
    port = free_port()
    env = orch_env(home, port, workers)
    run_cli([str(BIN / "orch"), "db", "init"], env)
    run_cli([str(BIN / "orch"), "user", "create-admin", "--username", ADMIN, "--password-stdin"], env, PASSWORD)
    server = start(procs, "orch-api", [sys.executable, "-m", "orch.api.server"], env, port, "/healthz")
    response = httpx.post(server.url + "/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=10)
    if response.status_code != 200:
        raise BenchError(f"POST /auth/token answered HTTP {response.status_code}: {response.text[:200]}")
    return server, str(response.json()["access_token"])


def start_bare(workdir: Path, procs: Processes) -> Server:
    app = workdir / "bare_app.py"
    app.write_text(BARE_APP, encoding="utf-8")
    port = free_port()
    return start(procs, "bare-app", [sys.executable, str(app), str(port)], clean_environ(), port, "/health")


# --- wrk -----------------------------------------------------------------------------------------

def wrk(url: str, seconds: int, connections: int, script: Path, deliveries: Path | None = None) -> dict[str, Any]:
    """One wrk run; its figures, requests/s added."""
    env = {**os.environ, **({"BENCH_DELIVERIES": str(deliveries)} if deliveries else {})}
    argv = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url]
    result = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk against {url} failed (exit {result.returncode})",
                         (result.stderr + result.stdout).splitlines()[-8:])
    figures: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    if figures["exhausted"]:
        raise BenchError(f"wrk ran out of signed deliveries against {url}: raise MAX_WEBHOOKS_PER_S")
    figures["per_s"] = round(figures["requests"] / (figures["duration_us"] / 1e6), 1)
    figures["connections"] = connections
    return figures


def with_cpu(server: Server, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``measure()`` and add the CPU seconds the server spent meanwhile."""
    before = server.cpu()
    figures: dict[str, Any] = measure()
    figures["server_cpu_s"] = round(server.cpu() - before, 2)
    return figures


def sign_deliveries(path: Path, count: int) -> Path:
    """``count`` unique ping deliveries signed now, as wrk's script reads them."""
    from orch.security.webhook_signature import sign

    now = int(time.time())
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            body = json.dumps({"event": "ping", "n": n}, separators=(",", ":"))
            out.write(f"{sign(WEBHOOK_SECRET, body.encode(), now)}\t{body}\n")
    return path


# --- open-loop dispatch --------------------------------------------------------------------------

async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a keep-alive connection; the answer's status (its body is read and dropped)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    if length is None:
        raise ValueError("answer without Content-Length")
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def open_loop(port: int, path: str, token: str | None, rate: float, seconds: float, expect: int,
                    connections: int) -> dict[str, Any]:
    """POST at a fixed rate whatever the answers take; latency counts from each request's scheduled time.

    Raw keep-alive sockets rather than httpx: httpx's pool could not send 200 req/s here even to the bare
    app (p50 15 s on a busy 2-core machine), which would have measured the client instead of the server."""
    body = json.dumps(DISPATCH_BODY).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n{auth}\r\n").encode() + body
    pool = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    for _ in range(20):  # warm-up: first-request costs
        status = await exchange(*pool[0], request)
        if status != expect:
            raise BenchError(f"POST {path} answered HTTP {status} during warm-up")
    count = int(rate * seconds)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    began = time.perf_counter() + 0.05

    async def schedule() -> None:
        for n in range(count):
            scheduled = began + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            due.put_nowait(scheduled)
        for _ in pool:
            due.put_nowait(None)

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (scheduled := await due.get()) is not None:
            try:
                status = await asyncio.wait_for(exchange(reader, writer, request), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                statuses[type(exc).__name__] += 1  # this connection is done for; the others go on
                return
            statuses[str(status)] += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

    await asyncio.gather(schedule(), *(send(*connection) for connection in pool))
    wall = time.perf_counter() - began
    for _, writer in pool:
        writer.close()
    answered = statuses.get(str(expect), 0)
    return {"requests": count, "rate": rate, "seconds": seconds, "connections": connections,
            "achieved_per_s": round(sum(statuses.values()) / wall, 1), "latency_ms": percentiles(latencies),
            "statuses": dict(statuses), "errors": count - answered}


def run_dispatch(server: Server, path: str, token: str | None, sizes: Sizes, expect: int) -> dict[str, Any]:
    return with_cpu(server, lambda: asyncio.run(open_loop(server.port, path, token, sizes.dispatch_rate,
                                                          sizes.dispatch_s, expect, DISPATCH_CONNECTIONS)))


# --- SSE -----------------------------------------------------------------------------------------

@dataclass(eq=False)
class Stream:
    """One SSE client on a raw socket: everything it received, kept to be searched."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    received: bytearray

    async def pump(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.received += chunk
        except (ConnectionError, asyncio.CancelledError):
            pass


async def open_stream(port: int, path: str, token: str | None) -> Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{auth}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    stream = Stream(reader, writer, int(head.split(b" ", 2)[1]), bytearray())
    while stream.status == 200 and b"retry:" not in stream.received:
        chunk = await reader.read(65536)
        if not chunk:
            break
        stream.received += chunk
    return stream


async def hold_streams(server: Server, path: str, token: str | None, clients: int,
                       dispatch: bool) -> dict[str, Any]:
    """Open ``clients`` streams, check each got the preamble (and, with ``dispatch``, the created events of
    tasks dispatched once all are open), read the server's RSS while it holds them, then close them."""
    gate = asyncio.Semaphore(SSE_OPEN_AT_ONCE)

    async def opened() -> Stream | BaseException:
        async with gate:
            try:
                return await open_stream(server.port, path, token)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                return exc

    rss_before, began = server.rss(), time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(opened() for _ in range(clients))), SSE_TIMEOUT)
    open_s = time.perf_counter() - began
    streams = [s for s in results if isinstance(s, Stream) and s.status == 200]
    failures = Counter(type(s).__name__ if not isinstance(s, Stream) else f"HTTP {s.status}" for s in results
                       if not (isinstance(s, Stream) and s.status == 200))
    preamble = sum(b"retry:" in s.received for s in streams)
    pumps = [asyncio.create_task(s.pump()) for s in streams]
    figures: dict[str, Any] = {"clients": clients, "open": len(streams), "open_failures": dict(failures),
                               "with_preamble": preamble, "open_s": round(open_s, 2),
                               "rss_before_mb": rss_before}
    if dispatch:
        figures.update(await deliver_tasks(server, token, streams))
    figures["rss_held_mb"] = server.rss()
    figures["largest_rss_held_mb"] = server.largest_rss()
    figures["rss_per_client_kb"] = round((figures["rss_held_mb"] - rss_before) * 1024 / max(1, len(streams)), 1)
    for stream in streams:
        stream.writer.close()
    for pump in pumps:
        pump.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    await asyncio.sleep(1.0)
    figures["rss_after_close_mb"] = server.rss()
    return figures


async def deliver_tasks(server: Server, token: str | None, streams: list[Stream]) -> dict[str, Any]:
    """Dispatch a few tasks; how long until every stream has received each one's ``task.created`` event."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        began = time.perf_counter()
        ids = []
        for _ in range(SSE_TASKS):
            response = await client.post(server.url + "/dispatch", json=DISPATCH_BODY)
            if response.status_code != 202:
                raise BenchError(f"POST /dispatch during SSE answered HTTP {response.status_code}")
            ids.append(response.json()["task_id"])
    wanted = [f'"task_id":"{task_id}"'.encode() for task_id in ids]

    def has_all(stream: Stream) -> bool:
        return b"event: task.created" in stream.received and all(w in stream.received for w in wanted)

    deadline = time.perf_counter() + SSE_TIMEOUT
    while not all(has_all(s) for s in streams) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    delivered = sum(has_all(s) for s in streams)
    return {"tasks": len(ids), "delivered_to": delivered,
            "all_delivered_s": round(time.perf_counter() - began, 2) if delivered == len(streams) else None}


def run_sse(server: Server, path: str, token: str | None, clients: int, dispatch: bool) -> dict[str, Any]:
    return with_cpu(server, lambda: asyncio.run(hold_streams(server, path, token, clients, dispatch)))


def streams_left_open(server: Server) -> float | None:
    """ORCH's own gauge of open SSE streams after every client has gone; waits a while for it to reach 0,
    since a server notices a closed stream only when it next writes or polls for the disconnect."""
    def read() -> float | None:
        for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("orch_sse_connections_active "):
                return float(line.split()[1])
        return None

    deadline = time.monotonic() + SSE_RELEASE_SECONDS
    value = read()
    while value and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def raise_open_files(needed: int) -> int:
    """Lift this process's soft descriptor limit (its children, the servers, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else needed
    if soft < needed:
        soft = min(needed, ceiling)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# --- report --------------------------------------------------------------------------------------

def goal_lines(report: dict[str, Any]) -> list[str]:
    orch = report["orch"]
    health, webhook, dispatch, sse = orch["health"], orch["webhook"], orch["dispatch"], orch["sse"]
    health_rps = health["per_s"]
    hook_rps, hook_p95 = webhook["per_s"], webhook["latency_ms"]["p95"]
    hook_bad = webhook["non200"] + webhook["connect_errors"] + webhook["read_errors"] + webhook["timeouts"]
    d95 = dispatch["latency_ms"].get("p95")
    sse_ok = sse["open"] >= GOAL_SSE_CLIENTS and sse["with_preamble"] == sse["open"] and \
        sse["delivered_to"] == sse["open"] and sse["rss_held_mb"] < GOAL_SSE_RSS_MB
    workers = report["sizes"].get("api_workers", 1)
    # Both memory goals are per process: with several workers, the largest worker is the one judged,
    # and streams spread over the workers say nothing about what one process holds.
    idle = orch["largest_rss_mb"]["idle"] if workers > 1 else orch["rss_mb"]["idle"]
    idle_note = f" for the largest of {workers + 1} processes, {orch['rss_mb']['idle']:.0f} MB together" \
        if workers > 1 else ""
    sse_line = (f"{verdict(sse_ok)} ({sse['open']:,} of {sse['clients']:,} open, {sse['with_preamble']:,} with the "
                f"preamble, {sse.get('delivered_to', 0):,} got every task event; {sse['rss_held_mb']:.0f} MB RSS)")
    if workers > 1:
        sse_line = (f"not judged with {workers} workers: the streams are spread over them ({sse['open']:,} of "
                    f"{sse['clients']:,} open, {sse.get('delivered_to', 0):,} got every task event; "
                    f"{sse['rss_held_mb']:.0f} MB together, largest process {sse['largest_rss_held_mb']:.0f} MB); "
                    f"run with --workers 1")
    return [
        f"- `/health` ≥ {GOAL_HEALTH_RPS:,.0f} req/s (original {ORIGINAL['health']}): "
        f"{verdict(health_rps >= GOAL_HEALTH_RPS and health['status_errors'] == 0)} (measured {health_rps:,.0f} "
        f"req/s{short_of(health_rps, GOAL_HEALTH_RPS)}; bare FastAPI {report['bare']['health']['per_s']:,.0f})",
        f"- dispatch p95 < {GOAL_DISPATCH_P95_MS:.0f} ms at {dispatch['rate']:.0f} req/s (original "
        f"{ORIGINAL['dispatch']}): {verdict(d95 is not None and d95 < GOAL_DISPATCH_P95_MS and not dispatch['errors'])}"
        f" (measured p95 {fmt(d95, 1)} ms, p99 {fmt(dispatch['latency_ms'].get('p99'), 1)} ms, "
        f"{dispatch['errors']} errors of {dispatch['requests']:,})",
        f"- webhooks ≥ {GOAL_WEBHOOK_PER_S:,.0f}/s with p95 < {GOAL_WEBHOOK_P95_MS:.0f} ms (original "
        f"{ORIGINAL['webhook']}): "
        f"{verdict(hook_rps >= GOAL_WEBHOOK_PER_S and hook_p95 < GOAL_WEBHOOK_P95_MS and hook_bad == 0)} "
        f"(measured {hook_rps:,.0f}/s at p95 {hook_p95:.1f} ms with {webhook['connections']} connections, "
        f"{hook_bad} non-200/failed)",
        f"- {GOAL_SSE_CLIENTS:,} SSE clients on one process under {GOAL_SSE_RSS_MB:.0f} MB RSS (original "
        f"{ORIGINAL['sse']}): {sse_line}",
        f"- API process idle RSS < {GOAL_IDLE_RSS_MB:.0f} MB: {verdict(idle < GOAL_IDLE_RSS_MB)} (measured "
        f"{idle:.0f} MB{idle_note}; bare FastAPI {report['bare']['rss_mb']['idle']:.0f} MB)",
        *security_goal_lines(orch),
    ]


def security_goal_lines(orch: dict[str, Any]) -> list[str]:
    login, attack = orch["login"], orch["header_attack"]
    l95 = login["latency_ms"]["p95"]
    refused = login["logins"] - login["statuses"].get("200", 0)
    a99 = attack["attacked"]["latency_ms"].get("p99")
    failed = sum(attack["attacked"]["failures"].values())
    return [
        f"- login p95 < {GOAL_LOGIN_P95_MS:.0f} ms ({login['hash']['scheme']} {login['hash']['parameters']}): "
        f"{verdict(l95 < GOAL_LOGIN_P95_MS and refused == 0)} (measured p50 {login['latency_ms']['p50']:.0f} ms, "
        f"p95 {l95:.0f} ms; {refused} refused)",
        f"- `/healthz` p99 < {GOAL_HEALTHZ_UNDER_ATTACK_P99_MS:.0f} ms while a client streams a "
        f"{attack['header_bytes'] // 2**20} MB header: "
        f"{verdict(a99 is not None and a99 < GOAL_HEALTHZ_UNDER_ATTACK_P99_MS and failed == 0)} (measured p99 "
        f"{fmt(a99, 1)} ms, {failed} failed; alone {fmt(attack['alone']['latency_ms'].get('p99'), 1)} ms)",
    ]


def wrk_cell(figures: dict[str, Any], rate_unit: str = "") -> str:
    bad = max(figures["non200"], figures["status_errors"])  # non200 is counted only for webhooks
    failed = figures["connect_errors"] + figures["read_errors"] + figures["timeouts"]
    extra = (f"; {bad:,} non-2xx" if bad else "") + (f"; {failed:,} socket errors" if failed else "")
    return f"{figures['per_s']:,.0f}{rate_unit}{extra}"


def latency_cell(figures: dict[str, Any]) -> str:
    lat = figures["latency_ms"]
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}"


def markdown(report: dict[str, Any]) -> str:
    machine, sizes, orch, bare = report["machine"], report["sizes"], report["orch"], report["bare"]
    o_sse, b_sse = orch["sse"], bare["sse"]
    rows = [
        ("idle RSS (MB); largest process", f"{orch['rss_mb']['idle']:.0f}; {orch['largest_rss_mb']['idle']:.0f}",
         f"{bare['rss_mb']['idle']:.0f}; {bare['largest_rss_mb']['idle']:.0f}"),
        (f"`GET /health` (req/s, {sizes['health_connections']} connections)", wrk_cell(orch["health"]),
         wrk_cell(bare["health"])),
        ("`GET /health` latency p50 / p95 / p99 (ms)", latency_cell(orch["health"]), latency_cell(bare["health"])),
        ("`GET /healthz` (req/s; p50 / p95 / p99 ms): no checks, no cache", f"{wrk_cell(orch['healthz'])}; "
         f"{latency_cell(orch['healthz'])}", "–"),
        (f"`POST /webhook` (events/s, {sizes['webhook_connections']} connections)", wrk_cell(orch["webhook"]),
         wrk_cell(bare["webhook"])),
        ("`POST /webhook` latency p50 / p95 / p99 (ms)", latency_cell(orch["webhook"]),
         latency_cell(bare["webhook"])),
        (f"`POST /dispatch` at {sizes['dispatch_rate']:.0f} req/s open loop, p50 / p95 / p99 (ms)",
         pct_cell1(orch["dispatch"]["latency_ms"]), pct_cell1(bare["dispatch"]["latency_ms"]) + " (bare POST)"),
        ("`POST /dispatch` achieved rate (req/s); errors", f"{orch['dispatch']['achieved_per_s']:,.0f}; "
         f"{orch['dispatch']['errors']}", f"{bare['dispatch']['achieved_per_s']:,.0f}; {bare['dispatch']['errors']}"),
        ("SSE streams open / with `retry:` preamble", f"{o_sse['open']:,} / {o_sse['with_preamble']:,}",
         f"{b_sse['open']:,} / {b_sse['with_preamble']:,}"),
        ("SSE: streams that got all task events; time to all (s)",
         f"{o_sse['delivered_to']:,} of {o_sse['open']:,}; {fmt(o_sse['all_delivered_s'], 2)}", "–"),
        (f"SSE streams the server still counts open after the clients closed (waited ≤ {SSE_RELEASE_SECONDS:.0f} s)",
         fmt(o_sse["left_open"]), "–"),
        ("SSE: time to open all (s)", f"{o_sse['open_s']:.1f}", f"{b_sse['open_s']:.1f}"),
        ("RSS holding the SSE streams (MB); per stream (KB)",
         f"{o_sse['rss_held_mb']:.0f}; {o_sse['rss_per_client_kb']:.0f}",
         f"{b_sse['rss_held_mb']:.0f}; {b_sse['rss_per_client_kb']:.0f}"),
        ("server CPU-s: health / webhook / dispatch / SSE", cpu_cell(orch), cpu_cell(bare)),
        ("server CPU per request (ms): health / webhook / dispatch", per_request_cell(orch),
         per_request_cell(bare)),
        *security_rows(orch),
    ]
    body = ["| figure | ORCH API | bare FastAPI (ceiling) |", "|---|---|---|",
            *("| " + " | ".join(row) + " |" for row in rows)]
    git = machine["git"]
    return "\n".join([
        "# ORCH-Next API benchmark", "",
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, {machine['timestamp']}, load average at start "
        f"{machine['load_avg_1m']} and at end {report['load_avg_end']}, code at {git['commit']}"
        + (f" plus {len(git['uncommitted'])} uncommitted paths" if git["uncommitted"] else "") + ".",
        f"`python -m orch.api.server` with {_workers_text(sizes['api_workers'])} over a fresh SQLite database "
        f"(default logging: one JSON access line per request), rate limit lifted, no Prefect (`/health` "
        f"answers degraded from its {report['health_cache_s']:.0f} s cache); bare FastAPI: one route per "
        f"figure, same uvicorn settings "
        f"({report['uvicorn_loop']}). Load on loopback from this machine: wrk -t1 for `/health` "
        f"({sizes['health_s']} s) and webhooks ({sizes['webhook_s']} s, every delivery freshly signed and "
        f"unique); asyncio keep-alive sockets for dispatch ({sizes['dispatch_s']:.0f} s, "
        f"{DISPATCH_CONNECTIONS} connections, latency from the scheduled send); "
        f"raw asyncio sockets for {sizes['sse_clients']:,} SSE streams.", "",
        *body, "", "Goals:", *goal_lines(report), "",
        f"API RSS over the run (MB): {', '.join(f'{k} {v:.0f}' for k, v in orch['rss_mb'].items())}.", ""])


def security_rows(orch: dict[str, Any]) -> list[tuple[str, str, str]]:
    login, attack = orch["login"], orch["header_attack"]
    hashed = login["hash"]
    alone, attacked = attack["alone"], attack["attacked"]
    verify = hashed.get("verify_ms", {})
    return [
        (f"`POST /auth/token`, {login['logins']} one at a time, p50 / p95 (ms); server CPU per login (ms)",
         f"{login['latency_ms']['p50']:.0f} / {login['latency_ms']['p95']:.0f}; "
         f"{login['server_cpu_s'] * 1000 / login['logins']:.0f}", "–"),
        (f"password hash alone, p50 (ms): {hashed['scheme']} {hashed['parameters']} / scrypt N=2^14 (replaced)",
         f"{fmt(verify.get('p50'), 1)} / {hashed['scrypt_2_14_ms']['p50']:.1f}", "–"),
        ("`GET /healthz` one at a time, p50 / p99 (ms): alone / while a 50 MB header streams",
         f"{pct2(alone['latency_ms'])} / {pct2(attacked['latency_ms'])}", "–"),
        ("the 50 MB header attack: attempts; what each got; most sent before it ended (MB)",
         f"{attacked['attacks']:,}; " + ", ".join(f"{k} ×{v:,}" for k, v in attacked["attack_answers"].items())
         + f"; {attacked['attack_most_sent_mb']:g}", "–"),
    ]


def pct2(figures: dict[str, float]) -> str:
    return f"{figures['p50']:.1f}, {figures['p99']:.1f}" if figures.get("n") else "–"


def _workers_text(workers: int) -> str:
    if workers == 1:
        return "one process (`api.workers: 1`, the default)"
    return f"`api.workers: {workers}` ({workers} worker processes; the rate limit counts in Redis)"


def pct_cell1(figures: dict[str, float]) -> str:
    if not figures.get("n"):
        return "–"
    return f"{figures['p50']:.1f} / {figures['p95']:.1f} / {figures['p99']:.1f}"


def cpu_cell(side: dict[str, Any]) -> str:
    return " / ".join(f"{side[k]['server_cpu_s']:.1f}" for k in ("health", "webhook", "dispatch", "sse"))


def per_request_cell(side: dict[str, Any]) -> str:
    """CPU the server spent per answered request: the cost behind each throughput figure."""
    served = {"health": side["health"]["requests"], "webhook": side["webhook"]["requests"],
              "dispatch": sum(side["dispatch"]["statuses"].values())}
    return " / ".join(f"{side[k]['server_cpu_s'] * 1000 / max(1, n):.2f}" for k, n in served.items())


def write_report(report: dict[str, Any], out: Path) -> str:
    table = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_api.md").write_text(table, encoding="utf-8")
    (out / "bench_api.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return table


# --- logins and a header attack (issue 14) ------------------------------------------------------

def stored_hash(server_home: Path) -> str:
    """The admin's stored password hash, read from the bench's own SQLite database."""
    import sqlite3

    with sqlite3.connect(server_home / "data" / "orch.db") as db:
        row = db.execute("SELECT password_hash FROM users WHERE username = ?", (ADMIN,)).fetchone()
    if row is None:
        raise BenchError(f"user {ADMIN} not in {server_home / 'data' / 'orch.db'}")
    return str(row[0])


def hash_alone_ms(stored: str, rounds: int = 10) -> dict[str, Any]:
    """The stored hash verified in this process, and the scrypt (N=2^14, r=8, p=1) hash it replaced."""
    import hashlib

    from argon2 import PasswordHasher

    def timed(verify: Callable[[], object]) -> float:
        began = time.perf_counter()
        verify()
        return (time.perf_counter() - began) * 1000

    parts = stored.split("$")
    if stored.startswith("$argon2"):  # $argon2id$v=19$m=...,t=...,p=...$salt$digest
        scheme, parameters = parts[1], parts[3]
    else:  # scrypt$N$r$p$salt$digest
        scheme, parameters = parts[0], f"N={parts[1]},r={parts[2]},p={parts[3]}"
    figures: dict[str, Any] = {"scheme": scheme, "parameters": parameters}
    if stored.startswith("$argon2"):
        hasher = PasswordHasher()
        figures["verify_ms"] = percentiles([timed(lambda: hasher.verify(stored, PASSWORD)) for _ in range(rounds)])
    salt = os.urandom(16)
    figures["scrypt_2_14_ms"] = percentiles([timed(lambda: hashlib.scrypt(
        PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)) for _ in range(rounds)])
    return figures


def run_logins(server: Server, home: Path) -> dict[str, Any]:
    def measure() -> dict[str, Any]:
        latencies, statuses = [], Counter[str]()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(LOGINS):
                began = time.perf_counter()
                status = client.post("/auth/token", data={"username": ADMIN, "password": PASSWORD}).status_code
                latencies.append((time.perf_counter() - began) * 1000)
                statuses[str(status)] += 1
        return {"logins": LOGINS, "latency_ms": percentiles(latencies), "statuses": dict(statuses)}

    figures = with_cpu(server, measure)
    figures["hash"] = hash_alone_ms(stored_hash(home))
    return figures


async def probe_healthz(port: int, seconds: float) -> dict[str, Any]:
    """``GET /healthz`` back to back on one keep-alive socket for ``seconds``: each answer's latency."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                status = await asyncio.wait_for(exchange(reader, writer, request), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                failures[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append((time.perf_counter() - began) * 1000)
            if status != 200:
                failures[str(status)] += 1
    finally:
        writer.close()
    return {"latency_ms": percentiles(latencies), "failures": dict(failures)}


async def big_header(port: int) -> dict[str, Any]:
    """One request whose header grows to 50 MB, sent as fast as the server takes it; what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ".encode())
    chunk = b"a" * ATTACK_CHUNK
    sent, outcome = 0, "sent whole"
    try:
        while sent < ATTACK_HEADER_BYTES:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 30)
            sent += len(chunk)
        writer.write(b"\r\n\r\n")
        await asyncio.wait_for(writer.drain(), 30)
    except (OSError, TimeoutError):
        outcome = "cut off"  # the server refused the head and closed while the client was still sending
    status = "no answer"
    if outcome == "sent whole":
        with contextlib.suppress(OSError, TimeoutError, IndexError):
            head = await asyncio.wait_for(reader.read(256), 30)
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "closed"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return {"sent_bytes": sent, "outcome": outcome, "status": status}


async def healthz_under_attack(port: int, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    attacks: list[dict[str, Any]] = []

    async def attacker() -> None:
        while not stop.is_set():
            attacks.append(await big_header(port))

    task = asyncio.create_task(attacker())
    await asyncio.sleep(0.2)  # the first header is on its way before the probe starts
    probe = await probe_healthz(port, seconds)
    stop.set()
    await task
    return {**probe, "attacks": len(attacks),
            "attack_answers": dict(Counter(a["status"] if a["outcome"] == "sent whole" else "cut off"
                                           for a in attacks)),
            "attack_most_sent_mb": round(max((a["sent_bytes"] for a in attacks), default=0) / 2**20, 2)}


def run_header_attack(server: Server) -> dict[str, Any]:
    alone = asyncio.run(probe_healthz(server.port, PROBE_SECONDS))
    attacked = with_cpu(server, lambda: asyncio.run(healthz_under_attack(server.port, PROBE_SECONDS)))
    server.note_rss("after_header_attack")
    return {"alone": alone, "attacked": attacked, "header_bytes": ATTACK_HEADER_BYTES}


# --- main ----------------------------------------------------------------------------------------

def uvicorn_loop() -> str:
    """What uvicorn's ``auto`` picks here, for both servers."""
    names = []
    for module, name in (("uvloop", "uvloop"), ("httptools", "httptools")):
        try:
            __import__(module)
            names.append(name)
        except ImportError:
            names.append(f"no {name}")
    return ", ".join(names)


def bench(workdir: Path, sizes: Sizes) -> dict[str, Any]:
    from orch.config.schema import ApiSettings

    machine = {**_machine_info(), "git": git_state()}
    report: dict[str, Any] = {
        "machine": machine, "sizes": asdict(sizes), "uvicorn_loop": uvicorn_loop(),
        "health_cache_s": ApiSettings().health_cache_seconds,
        "open_files_limit": raise_open_files(2 * sizes.sse_clients + 512),
        "goals": {"health_per_s": GOAL_HEALTH_RPS, "dispatch_p95_ms": GOAL_DISPATCH_P95_MS,
                  "webhook_per_s": GOAL_WEBHOOK_PER_S, "webhook_p95_ms": GOAL_WEBHOOK_P95_MS,
                  "sse_clients": GOAL_SSE_CLIENTS, "sse_rss_mb": GOAL_SSE_RSS_MB, "idle_rss_mb": GOAL_IDLE_RSS_MB,
                  "login_p95_ms": GOAL_LOGIN_P95_MS, "healthz_under_attack_p99_ms": GOAL_HEALTHZ_UNDER_ATTACK_P99_MS},
        "original": ORIGINAL}
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    procs = Processes(workdir / "logs")
    procs.log_dir.mkdir()
    try:
        say("(a) starting ORCH's API and the bare app")
        orch, token = start_orch(workdir, procs, sizes.api_workers)
        bare = start_bare(workdir, procs)
        results: dict[str, dict[str, Any]] = {"orch": {}, "bare": {}}
        say(f"(b) GET /health, {sizes.health_s} s each, and ORCH's /healthz")
        for server, side in ((orch, "orch"), (bare, "bare")):
            results[side]["health"] = with_cpu(server, lambda s=server: wrk(
                s.url + "/health", sizes.health_s, sizes.health_connections, script))
            server.note_rss("after_health")
        results["orch"]["healthz"] = with_cpu(orch, lambda: wrk(orch.url + "/healthz", sizes.health_s,
                                                                sizes.health_connections, script))
        say(f"(c) POST /webhook, {sizes.webhook_s} s each")
        deliveries = sign_deliveries(workdir / "deliveries.tsv", sizes.webhook_s * MAX_WEBHOOKS_PER_S)
        for server, side in ((orch, "orch"), (bare, "bare")):
            results[side]["webhook"] = with_cpu(server, lambda s=server: wrk(
                s.url + "/webhook", sizes.webhook_s, sizes.webhook_connections, script, deliveries))
            server.note_rss("after_webhook")
        say(f"(d) POST /dispatch at {sizes.dispatch_rate:.0f} req/s for {sizes.dispatch_s:.0f} s")
        results["orch"]["dispatch"] = run_dispatch(orch, "/dispatch", token, sizes, 202)
        orch.note_rss("after_dispatch")
        results["bare"]["dispatch"] = run_dispatch(bare, "/webhook", None, sizes, 200)
        say(f"(e) {sizes.sse_clients:,} SSE streams held")
        results["orch"]["sse"] = run_sse(orch, "/sse/events", token, sizes.sse_clients, dispatch=True)
        results["orch"]["sse"]["left_open"] = streams_left_open(orch)
        orch.note_rss("after_sse_closed")
        results["bare"]["sse"] = run_sse(bare, "/sse", None, sizes.sse_clients, dispatch=False)
        for server, side in ((orch, "orch"), (bare, "bare")):
            results[side]["rss_mb"] = server.rss_mb
            results[side]["largest_rss_mb"] = server.largest_rss_mb
        say(f"(f) {LOGINS} logins one at a time")
        results["orch"]["login"] = run_logins(orch, workdir / "orch")
        say(f"(g) /healthz for {PROBE_SECONDS:.0f} s alone, then while a client streams a "
            f"{ATTACK_HEADER_BYTES // 2**20} MB header")
        results["orch"]["header_attack"] = run_header_attack(orch)
        report.update(results)
        report["load_avg_end"] = round(os.getloadavg()[0], 2)
    finally:
        procs.stop_all()
    return report


def _terminated(signum: int, _frame: object) -> None:
    raise BenchError(f"interrupted by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="report directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: short phases, 200 SSE clients (~1 min)")
    parser.add_argument("--sse-clients", type=int, help="SSE streams to hold (default 2,000)")
    parser.add_argument("--webhook-connections", type=int, help="wrk connections for webhooks (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="api.workers of ORCH's API (default 1; more "
                        "needs Redis on 127.0.0.1:6379 for the shared rate limit)")
    args = parser.parse_args(argv)
    if not Path(WRK).is_file():
        parser.error("wrk not found; install it (Debian: apt-get install wrk)")
    if not (BIN / "orch").is_file():
        parser.error(f"orch not found next to {sys.executable}; run it with the project's venv")
    sizes = QUICK if args.quick else DEFAULT
    if args.sse_clients is not None:
        if args.sse_clients < 1:
            parser.error("--sse-clients must be at least 1")
        sizes = Sizes(**{**asdict(sizes), "sse_clients": args.sse_clients})
    if args.webhook_connections is not None:
        if args.webhook_connections < 1:
            parser.error("--webhook-connections must be at least 1")
        sizes = Sizes(**{**asdict(sizes), "webhook_connections": args.webhook_connections})

    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    sizes = Sizes(**{**asdict(sizes), "api_workers": args.workers})

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    signal.signal(signal.SIGTERM, _terminated)
    return run_bench("orch-bench-api-", lambda workdir: bench(workdir, sizes),
                     lambda report: write_report(report, args.out))


if __name__ == "__main__":
    sys.exit(main())
