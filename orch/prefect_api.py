"""Small, synchronous questions to the Prefect server that ORCH's health checks ask, and the one way
ORCH's own HTTP calls to Prefect authenticate.

Why not Prefect's client: ``orch doctor`` and the health endpoint must answer in milliseconds and must
not import Prefect (about 2 s); ``/api/ready`` (which, unlike ``/api/health``, checks the server's
database) is one GET.

Prefect's server, started with ``PREFECT_SERVER_API_AUTH_STRING``, answers 401 to every route but
``GET /health`` and ``GET /ready`` without ``Authorization: Basic base64(auth string)`` (Prefect's own
client sends the same header from ``PREFECT_API_AUTH_STRING``). Every ORCH call to Prefect's REST API
takes its header from :func:`prefect_headers` or its client from :func:`prefect_http_client`.

Prefect's server answers 503 to a request that failed for a reason a client may retry (SQLite busy, a
dropped database connection; ``is_client_retryable_exception`` in its ``server.py``), and its own client
retries 429, 502 and 503. ORCH's calls to Prefect's REST API retry the same answers (:data:`PREFECT_RETRY`),
so a busy server is not reported to an operator as an unreachable one. A refused connection is not
retried: the caller says at once that Prefect cannot be reached.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import httpx
from httpx_retries import Retry

from orch.config.schema import PrefectSettings
from orch.errors import OrchError
from orch.http import http_client, shared_http_client

# The cheapest route the auth check guards: readiness would say "ready" to a wrong string otherwise.
_AUTH_PROBE = "/admin/version"

# Every method: a 503 from Prefect means its transaction rolled back, so a POST (a filter, a resume) is as
# safe to send again as a GET. Four retries, at most 2 s apart and 5 s in all (with full jitter), bound
# what one busy spell can add to an API request.
PREFECT_RETRY = Retry(total=4, allowed_methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
                      status_forcelist=(429, 502, 503), retry_on_exceptions=(), backoff_factor=0.25,
                      max_backoff_wait=2.0, total_timeout=5.0)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    url: str
    latency_ms: float | None
    problem: str | None = None


def prefect_headers(prefect: PrefectSettings) -> dict[str, str]:
    """``Authorization: Basic ...`` for the configured auth string; none when there is no string."""
    if prefect.auth_string is None:
        return {}
    token = base64.b64encode(prefect.auth_string.get_secret_value().encode("utf-8")).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def prefect_http_client(prefect: PrefectSettings, timeout: float = 5.0) -> httpx.Client:
    """A client whose every request to Prefect carries the auth header and retries what Prefect says may be
    retried (for a block of calls)."""
    return http_client(timeout, headers=prefect_headers(prefect), retry=PREFECT_RETRY)


def prefect_readiness(prefect: PrefectSettings, timeout: float = 3.0) -> Readiness:
    """Ask ``GET {api}/ready``, then whether the server accepts ORCH's auth string.

    A refused connection, a non-200 answer or a 401 is 'not ready', with why: ``/ready`` needs no
    credentials, so without the second question a wrong or missing string would look healthy while
    every flow start and worker poll fails.
    """
    api = prefect.resolved_api_url().rstrip("/")
    url = api + "/ready"
    client = shared_http_client()
    started = time.perf_counter()
    try:
        response = client.get(url, timeout=timeout)
        latency = round((time.perf_counter() - started) * 1000, 1)
        if response.status_code != 200:
            return Readiness(False, url, latency, f"HTTP {response.status_code}")
        checked = client.get(api + _AUTH_PROBE, headers=prefect_headers(prefect), timeout=timeout)
    except httpx.HTTPError as exc:
        return Readiness(False, url, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if checked.status_code == 401:
        given = "was refused" if prefect.auth_string is not None else "is not set"
        return Readiness(False, url, latency, f"HTTP 401: the Prefect server requires an auth string and ORCH's "
                                              f"{given} (set PREFECT_API_AUTH_STRING to the server's "
                                              "PREFECT_SERVER_API_AUTH_STRING)")
    return Readiness(True, url, latency)


def online_workers(prefect: PrefectSettings, pool: str, timeout: float = 3.0) -> int:
    """How many workers of ``pool`` the server currently sees as ONLINE (0 when it cannot tell)."""
    url = f"{prefect.resolved_api_url().rstrip('/')}/work_pools/{pool}/workers/filter"
    try:
        response = shared_http_client(PREFECT_RETRY).post(url, json={}, headers=prefect_headers(prefect),
                                                          timeout=timeout)
    except httpx.HTTPError:
        return 0
    if response.status_code != 200:
        return 0
    return sum(1 for worker in response.json() if worker.get("status") == "ONLINE")


class PrefectUnavailable(OrchError):
    """The Prefect server could not be asked (refused, timed out, or an unexpected answer)."""

    status_code = 503


def flow_run_state_type(prefect: PrefectSettings, flow_run_id: str, timeout: float = 5.0) -> str | None:
    """The flow run's state type (``PAUSED``, ``RUNNING``...), or None when the server does not know the run.

    Raises :class:`PrefectUnavailable` when the server cannot answer, so a caller never mistakes an
    unreachable server for a run that is no longer paused."""
    url = f"{prefect.resolved_api_url().rstrip('/')}/flow_runs/{flow_run_id}"
    try:
        response = shared_http_client(PREFECT_RETRY).get(url, headers=prefect_headers(prefect), timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(f"Prefect server at {prefect.resolved_api_url()}: {type(exc).__name__}") from None
    if response.status_code in (404, 422):  # 422: not a flow run id at all
        return None
    if response.status_code != 200:
        raise PrefectUnavailable(f"Prefect server answered HTTP {response.status_code} for flow run {flow_run_id}")
    state = response.json().get("state") or {}
    return state.get("type")


def resume_flow_run(prefect: PrefectSettings, flow_run_id: str, run_input: dict[str, object],
                    timeout: float = 10.0) -> str | None:
    """Resume a paused flow run with ``run_input`` (validated by the server against the schema the run
    saved when it paused); None when resumed, else the server's reason for refusing.

    The REST route rather than ``prefect.flow_runs.resume_flow_run``: the API must not import Prefect,
    and the route already stores the input under the key the paused run waits on."""
    url = f"{prefect.resolved_api_url().rstrip('/')}/flow_runs/{flow_run_id}/resume"
    try:
        response = shared_http_client(PREFECT_RETRY).post(url, json={"run_input": run_input},
                                                          headers=prefect_headers(prefect), timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(f"Prefect server at {prefect.resolved_api_url()}: {type(exc).__name__}") from None
    if response.status_code == 404:
        return f"flow run {flow_run_id} is unknown to the Prefect server"
    if response.status_code not in (200, 201):
        raise PrefectUnavailable(f"Prefect server answered HTTP {response.status_code} resuming {flow_run_id}")
    result = response.json()
    if result.get("status") == "ACCEPT":
        return None
    return str((result.get("details") or {}).get("reason") or result.get("status"))


def flow_runs_by_idempotency_key(prefect: PrefectSettings, keys: list[str],
                                 timeout: float = 10.0) -> dict[str, tuple[str | None, str]]:
    """The state type and message of each flow run the server holds under one of ``keys`` (the idempotency
    key it was created with); a key with no run is absent. Raises :class:`PrefectUnavailable`."""
    if not keys:
        return {}
    url = f"{prefect.resolved_api_url().rstrip('/')}/flow_runs/filter"
    body = {"flow_runs": {"idempotency_key": {"any_": keys}}, "limit": min(len(keys), 200)}
    try:
        response = shared_http_client(PREFECT_RETRY).post(url, json=body, headers=prefect_headers(prefect),
                                                          timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(f"Prefect server at {prefect.resolved_api_url()}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise PrefectUnavailable(f"Prefect server answered HTTP {response.status_code} filtering flow runs")
    found: dict[str, tuple[str | None, str]] = {}
    for run in response.json():
        state = run.get("state") or {}
        found[run["idempotency_key"]] = (state.get("type"), str(state.get("message") or ""))
    return found
