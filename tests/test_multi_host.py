"""The distributed topology on one machine: two dispatcher processes and two API processes against one
PostgreSQL ORCH database and one Redis. A few hundred tasks dispatched through both APIs each run
exactly once, both dispatchers take work, and the per-user rate limit holds across both APIs."""

from __future__ import annotations

import os
import subprocess
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from support import answers_200, free_port, prefect_auth, require_redis, wait_until
from workers import api_server, dispatcher_service

from orch.config.loader import load_settings
from orch.config.schema import Settings
from orch.security.users import create_user
from orch.storage.engine import session_scope
from orch.storage.migrate import upgrade
from orch.storage.models import Task, TaskEvent

pytestmark = pytest.mark.slow  # two APIs and two dispatchers on PostgreSQL and Redis

REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "Multi-H0st-Passw0rd!"
LIMIT_PER_MINUTE = 50
TASKS = 300


def _wait_up(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    wait_until(lambda: answers_200(f"{url}/healthz", child), 90, f"the API at {url}",
               details=lambda: log.read_text()[-3000:])


def _wait_dispatchers(prefect_api: str, since: str, count: int, logs: Path) -> None:
    """Until ``count`` dispatch flow runs are Running and labelled with their executor: the flow labels
    itself just before its dispatcher starts claiming (flows/dispatch.py), so from then on each one polls."""
    from orch.dispatch.lease_owner import EXECUTOR_LABEL

    query = {"flows": {"name": {"any_": ["dispatch"]}},
             "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}, "start_time": {"after_": since}}}

    def claiming() -> bool:
        runs = httpx.post(f"{prefect_api}/flow_runs/filter", json=query, headers=prefect_auth(), timeout=5).json()
        return sum(1 for run in runs if EXECUTOR_LABEL in (run.get("labels") or {})) >= count

    wait_until(claiming, 120, f"{count} dispatchers to run their dispatch flow",
               details=lambda: (logs / "dispatcher-0.log").read_text()[-2000:])


def _completed(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(Task).where(Task.status == "completed")) or 0)


def test_two_apis_two_dispatchers_postgres_and_redis(pg_url: str, prefect_server: str, isolated_env: Path) -> None:
    require_redis(REDIS_URL, "the multi-host test")
    suffix = uuid.uuid4().hex[:8]  # rate-limit keys in the shared Redis are per user: fresh names
    operator, viewer = f"op-{suffix}", f"viewer-{suffix}"
    env = {**os.environ, "DATABASE_URL": pg_url, "PREFECT_API_URL": prefect_server, "ORCH_HOME": str(isolated_env),
           "JWT_SECRET": "multi-host-jwt-secret-0123456789", "WEBHOOK_SECRET": "multi-host-webhook-0123456789",
           "ORCH_MCP_TOKEN": "multi-host-mcp-token-0123456789",
           "ORCH_SECURITY__RATE_LIMIT__STORAGE_URL": REDIS_URL,
           "ORCH_SECURITY__RATE_LIMIT__REQUESTS_PER_MINUTE": str(LIMIT_PER_MINUTE),
           "ORCH_SECURITY__RATE_LIMIT__BURST_SIZE": str(LIMIT_PER_MINUTE),
           "ORCH_DISPATCH__CORE_CONCURRENCY": "8", "ORCH_DISPATCH__LEASE_SECONDS": "10"}
    settings = load_settings(environ=env, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    with session_scope(settings.database, write_lock=True) as session:
        create_user(session, username=operator, password=PASSWORD, role="operator",
                    policy=settings.security.password_policy, actor="test")
        create_user(session, username=viewer, password=PASSWORD, role="viewer",
                    policy=settings.security.password_policy, actor="test")

    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with ExitStack() as stack:
        for index, port in enumerate(ports):
            log = isolated_env / f"api-{index}.log"
            child = stack.enter_context(api_server(log, {**env, "ORCH_PORT": str(port)}, grace=20))
            _wait_up(urls[index], child, log)
        tokens = {name: httpx.post(f"{urls[0]}/auth/token", data={"username": name, "password": PASSWORD}
                                   ).json()["access_token"] for name in (operator, viewer)}

        # Both dispatchers up and polling (each runs a `dispatch` flow) before any work arrives, so the
        # first one up cannot take it all.
        started = datetime.now(UTC).isoformat()
        for index in range(2):
            stack.enter_context(dispatcher_service(isolated_env / f"dispatcher-{index}.log", env, grace=20))
        _wait_dispatchers(prefect_server, started, 2, isolated_env)

        # Dispatch through both APIs, in batches.
        task_ids: list[str] = []
        for batch in range(TASKS // 30):
            response = httpx.post(f"{urls[batch % 2]}/dispatch/batch",
                                  json={"tasks": [{"core_id": f"core-{i % 6}", "action": "sleep",
                                                   "params": {"seconds": 0.05}} for i in range(30)]},
                                  headers={"Authorization": f"Bearer {tokens[operator]}"}, timeout=30)
            assert response.status_code == 202, response.text
            task_ids += [t["task_id"] for t in response.json()["tasks"]]
        assert len(set(task_ids)) == TASKS

        # The rate limit is one limit across both replicas (Redis), not one per replica. The viewer's minute
        # opens with its first request (Redis keeps the window): the count is exact unless these took a minute.
        statuses = [httpx.get(f"{urls[i % 2]}/tasks", params={"limit": 1},
                              headers={"Authorization": f"Bearer {tokens[viewer]}"}).status_code
                    for i in range(LIMIT_PER_MINUTE + 10)]
        assert statuses.count(200) == LIMIT_PER_MINUTE and statuses.count(429) == 10, statuses

        wait_until(lambda: _completed(settings) == TASKS, 300, f"all {TASKS} tasks to complete",
                   details=lambda: f"{_completed(settings)} completed; "
                                   + (isolated_env / "dispatcher-0.log").read_text()[-2000:], interval=0.5)

    with session_scope(settings.database) as session:
        attempts = set(session.scalars(select(Task.attempts)))
        starts = session.execute(select(TaskEvent.task_id, func.count()).where(TaskEvent.event_type == "task.started")
                                 .group_by(TaskEvent.task_id)).all()
        dispatchers = {row.data.get("dispatcher") for row in session.scalars(
            select(TaskEvent).where(TaskEvent.event_type == "task.started"))}
    assert attempts == {1}
    assert len(starts) == TASKS and {count for _, count in starts} == {1}  # each ran exactly once
    assert len(dispatchers) == 2, dispatchers  # both dispatchers took work
