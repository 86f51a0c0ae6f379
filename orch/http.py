"""The one HTTP client factory: explicit timeouts and an identifying User-Agent on every call."""

from __future__ import annotations

import httpx

from orch import __version__

USER_AGENT = f"orch-next/{__version__}"


def http_client(timeout: float = 5.0, **kwargs: object) -> httpx.Client:
    """A client that never waits forever: an operator's health check must answer, even 'down'."""
    return httpx.Client(timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT},
                        **kwargs)  # type: ignore[arg-type]
