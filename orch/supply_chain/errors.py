"""Errors of the supply-chain commands: each is a user-facing one-liner (``orch`` prints ``error: ...``)."""

from __future__ import annotations

from orch.errors import OrchError


class SupplyChainError(OrchError):
    """A bad path, key or file given by the operator; nothing was written."""


class VerificationFailed(SupplyChainError):
    """The SBOM does not match its signature; ``reason`` names which check failed."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"SBOM verification failed ({reason}): {detail}")
