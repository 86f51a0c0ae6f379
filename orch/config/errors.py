"""The configuration's error, in its own module so the loader and the local-secrets file can both raise it
without importing each other."""

from __future__ import annotations

from orch.errors import OrchError


class ConfigError(OrchError):
    """Configuration is unusable. ``errors`` holds one ``key.path: problem`` line per mistake."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        super().__init__((f"{source}: " if source else "") + "; ".join(errors))
