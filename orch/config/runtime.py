"""The settings of *this* process, loaded once.

Flows, tasks and API handlers run in long-lived processes started with the right environment
(``orch up`` exports ``ORCH_HOME`` and ``ORCH_CONFIG_PATH``); loading the file once per process keeps
every component on one consistent view and off the disk in hot paths.
"""

from __future__ import annotations

from functools import lru_cache

from orch.config.loader import load_settings
from orch.config.schema import Settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    """Forget the loaded settings (tests that change the environment)."""
    get_settings.cache_clear()
