"""``/health`` and ``/healthz`` over real HTTP, against a real database and the real Prefect server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from api_fixtures import serve
from support import free_port, prefect_auth

from orch.config.loader import load_settings
from orch.storage.migrate import upgrade


@contextmanager
def serve_with(**environ: str) -> Iterator[str]:
    """The real app under uvicorn for settings from this environment plus ``environ``."""
    with serve(load_settings(environ={**os.environ, **environ})) as url:
        yield url


def forget_workers(prefect_api: str, pool: str) -> None:
    """No worker in ``pool`` on the session's Prefect server, made explicit: an earlier test's worker (this
    server is shared by the tests of one pytest worker, in any order) stays ONLINE there until its
    heartbeats time out, although its process is gone."""
    response = httpx.post(f"{prefect_api}/work_pools/{pool}/workers/filter", json={}, headers=prefect_auth(),
                          timeout=10)
    if response.status_code == 404:  # no such pool yet: no worker either
        return
    response.raise_for_status()
    for worker in response.json():
        httpx.delete(f"{prefect_api}/work_pools/{pool}/workers/{worker['name']}", headers=prefect_auth(),
                     timeout=10).raise_for_status()


def test_health_with_database_and_prefect_but_no_dispatcher(database_url: str, prefect_server: str) -> None:
    """Database and Prefect fine, no worker online in the ORCH pool: degraded (200), and it says why.
    (The all-ok answer, with a worker running, is checked by the `orch up` end-to-end test.)"""
    upgrade(load_settings(environ={"DATABASE_URL": database_url}, generate_secrets=False).database)
    forget_workers(prefect_server, "orch-process")
    with serve_with(DATABASE_URL=database_url, PREFECT_API_URL=prefect_server) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        response = httpx.get(f"{url}/health")
        body = response.json()
        assert response.status_code == 200 and body["status"] == "degraded", body
        assert set(body) == {"status", "timestamp", "version", "uptime_seconds", "components"}
        components = body["components"]
        assert components["database"]["status"] == "ok" and components["prefect"]["status"] == "ok"
        assert components["dispatcher"]["status"] == "degraded"
        assert "no online worker in work pool 'orch-process'" in components["dispatcher"]["detail"]


def test_health_degraded_without_prefect(isolated_env) -> None:  # type: ignore[no-untyped-def]
    upgrade(load_settings(generate_secrets=False).database)
    with serve_with(PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api") as url:
        response = httpx.get(f"{url}/health")
        body = response.json()
        assert response.status_code == 200 and body["status"] == "degraded"
        assert "ConnectError" in body["components"]["prefect"]["detail"]


def test_health_down_without_database_answers_503(prefect_server: str) -> None:
    dead = f"postgresql://orch:pw-not-shown-9@127.0.0.1:{free_port()}/orch"
    with serve_with(DATABASE_URL=dead, PREFECT_API_URL=prefect_server) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # liveness does not need the database
        response = httpx.get(f"{url}/health")
        body = response.json()
        assert response.status_code == 503 and body["status"] == "down"
        assert body["components"]["database"]["status"] == "down"
        assert "pw-not-shown-9" not in response.text
