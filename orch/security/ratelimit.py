"""Per-caller rate limits on the `limits` library, in memory or shared between replicas in Redis.

Two sliding windows are checked for every caller: ``requests_per_minute`` per minute and
``burst_size`` per second. Together they give the guide's "100 a minute with bursts of 20": a
quiet client may fire 20 requests at once, but not more than about 100 in any sixty seconds.
Sliding-window counters (two counters per window, weighted) rather than moving windows (one entry per
request): a moving window costs memory and time in proportion to the limit, which a generous limit
on a busy API turns into milliseconds per request.

With ``security.rate_limit.storage_url`` set to ``redis://…`` every API replica counts in the same
Redis keys, so a client spreading requests over replicas gets the same limit as against one.
When Redis is unreachable the request is let through and the failure is logged once a minute: a rate
limiter that takes the API down with it would turn a Redis hiccup into an outage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from orch.config.schema import RateLimitSettings
from orch.logging_config import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds until the first window frees a slot
    limit: int = 0


class RateLimiter:
    """One per API process; ``hit(key)`` counts a request of ``key`` and says whether it may proceed."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.per_minute = RateLimitItemPerMinute(settings.requests_per_minute)
        self.per_second = RateLimitItemPerSecond(settings.burst_size)
        self.storage = self._storage(settings.storage_url)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.shared = bool(settings.storage_url and not settings.storage_url.startswith("memory://"))
        self._last_error_log = 0.0

    @staticmethod
    def _storage(url: str | None) -> Storage:
        if not url or url.startswith("memory://"):
            return MemoryStorage()
        return storage_from_string(f"async+{url}", implementation="redispy", socket_timeout=0.5,
                                   socket_connect_timeout=0.5)

    async def hit(self, key: str) -> Verdict:
        try:
            for item in (self.per_second, self.per_minute):
                if not await self.strategy.hit(item, "orch", key):
                    stats = await self.strategy.get_window_stats(item, "orch", key)
                    wait = max(1, math.ceil(stats.reset_time - time.time()))
                    return Verdict(False, retry_after=wait, limit=item.amount)
            return Verdict(True, limit=self.per_minute.amount)
        except Exception as exc:  # noqa: BLE001 - the limiter's store is down: serve, and say so in the log
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.error("rate limit store unreachable; requests are not being limited: %s", exc,
                          extra={"event_type": "rate_limit.store_error"})
            return Verdict(True)

    async def check_store(self) -> bool:
        """Whether the store answers (for /health)."""
        try:
            return bool(await self.storage.check())
        except Exception:  # noqa: BLE001 - an unreachable Redis is a health status
            return False
