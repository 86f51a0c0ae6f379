"""The settings of *this* process, loaded once.

Flows, tasks and API handlers run in long-lived processes started with the right environment
(``orch up`` exports ``ORCH_HOME`` and ``ORCH_CONFIG_PATH``); loading the file once per process keeps
every component on one consistent view and off the disk in hot paths.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

from orch.config.loader import load_settings
from orch.config.schema import Settings

PREFECT_AUTH_ENV = "PREFECT_API_AUTH_STRING"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = load_settings()
    share_prefect_auth(settings)
    return settings


def share_prefect_auth(settings: Settings) -> None:
    """Give Prefect's own client in this process the auth string ORCH resolved.

    Prefect reads ``PREFECT_API_AUTH_STRING`` from the environment, but ORCH's string may come from
    elsewhere (``data/secrets.json``, ``ORCH_PREFECT__AUTH_STRING``, the config file): without this, a
    worker, a flow or a command started by hand would talk to an authenticated server without it.
    Prefect freezes its settings when ``prefect.context`` is first imported, so they are refreshed if
    that already happened.
    """
    if settings.prefect.auth_string is None:
        return
    value = settings.prefect.auth_string.get_secret_value()
    if os.environ.get(PREFECT_AUTH_ENV) == value:
        return
    os.environ[PREFECT_AUTH_ENV] = value
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def reset_settings_cache() -> None:
    """Forget the loaded settings (tests that change the environment)."""
    get_settings.cache_clear()
