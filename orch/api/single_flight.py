"""One read in flight per key: concurrent requests that need the same missing value share one call.

Why: the API keeps short caches in front of reads every request needs (a token's identity, the
maintenance switch), each valid for about a second. When an entry lapsed, every request in flight at that
moment missed it and read the database itself: under 32 concurrent clients, 32 thread hand-offs and 32
reads a second per cache, more than the pool holds, so each read past it opened (and then closed) a
connection of its own. Measured with py-spy on the user's path (single ``POST /dispatch`` by 32 clients):
those reads were 12 % of the API's busy time. Now the first request makes the call and the others wait
for its answer, or its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class SingleFlight:
    """Calls in the thread pool, shared by key among the callers of one event loop."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a thread, or the result of the call already running for ``key``. A caller
        that is cancelled (its client went away) leaves the call running for the others."""
        loop = asyncio.get_running_loop()
        flight = self._calls.get(key)
        if flight is None or flight.get_loop() is not loop:  # a test client's earlier loop may be gone
            flight = asyncio.ensure_future(run_in_threadpool(call, *args))
            self._calls[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)  # type: ignore[no-any-return]

    def _landed(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone, and the error is theirs, not the loop's
