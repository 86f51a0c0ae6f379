"""Configuration: the schema (:mod:`.schema`) and its one loader (:mod:`.loader`)."""

from orch.config.loader import ConfigError, load_settings
from orch.config.schema import Settings

__all__ = ["ConfigError", "Settings", "load_settings"]
