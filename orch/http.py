"""The one HTTP client factory: explicit timeouts and an identifying User-Agent on every call, and retries
where the server says a request may be sent again."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import httpx
from httpx_retries import Retry, RetryTransport

from orch import __version__

USER_AGENT = f"orch-next/{__version__}"
_shared: dict[int, httpx.Client] = {}  # id(retry policy) or 0 -> the process's client
_shared_lock = threading.Lock()


def http_client(timeout: float = 5.0, headers: Mapping[str, str] | None = None, *,
                retry: Retry | None = None, **kwargs: object) -> httpx.Client:
    """A client that never waits forever: an operator's health check must answer, even 'down'.

    ``headers`` are sent with every request besides the User-Agent (e.g. Prefect's auth header);
    ``retry`` (httpx-retries' policy) sends again what the policy names, with its backoff.
    """
    if retry is not None:
        kwargs["transport"] = RetryTransport(httpx.HTTPTransport(), retry=retry)
    return httpx.Client(timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT, **(headers or {})},
                        **kwargs)  # type: ignore[arg-type]


def shared_http_client(retry: Retry | None = None) -> httpx.Client:
    """One long-lived client per process (and per retry policy) for calls repeated every few seconds (the
    API's health checks) or made one at a time (an approval's resume).

    Building a client builds an SSL context, about 20 ms of CPU; a shared one also keeps connections
    alive. httpx clients are safe to use from several threads. Callers pass their own ``timeout=``.
    """
    key = 0 if retry is None else id(retry)
    with _shared_lock:
        client = _shared.get(key)
        if client is None or client.is_closed:
            client = _shared[key] = http_client(5.0, retry=retry)
        return client
