"""Tasks that look at the Prefect server ORCH runs on."""

from __future__ import annotations

from dataclasses import asdict

from prefect import task

from orch.config.runtime import get_settings
from orch.prefect_api import prefect_readiness


@task(name="prefect-readiness", retries=2, retry_delay_seconds=[2, 5])
def readiness() -> dict[str, object]:
    """The server's ``/api/ready`` (it checks the server's own database, unlike ``/api/health``)."""
    return asdict(prefect_readiness(get_settings().prefect))
