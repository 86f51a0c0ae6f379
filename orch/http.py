"""The one HTTP client factory: explicit timeouts and an identifying User-Agent on every call."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import httpx

from orch import __version__

USER_AGENT = f"orch-next/{__version__}"
_shared: httpx.Client | None = None
_shared_lock = threading.Lock()


def http_client(timeout: float = 5.0, headers: Mapping[str, str] | None = None, **kwargs: object) -> httpx.Client:
    """A client that never waits forever: an operator's health check must answer, even 'down'.

    ``headers`` are sent with every request besides the User-Agent (e.g. Prefect's auth header).
    """
    return httpx.Client(timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT, **(headers or {})},
                        **kwargs)  # type: ignore[arg-type]


def shared_http_client() -> httpx.Client:
    """One long-lived client per process for calls repeated every few seconds (the API's health checks).

    Building a client builds an SSL context, about 20 ms of CPU; a shared one also keeps connections
    alive. httpx clients are safe to use from several threads. Callers pass their own ``timeout=``.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.is_closed:
            _shared = http_client(5.0)
        return _shared
