"""The ``prefect`` section: the Prefect server ORCH uses (or starts) and how its workers poll it."""

from __future__ import annotations

from pydantic import Field

from orch.config.sections.base import Section, StrongSecret


class PrefectSettings(Section):
    """The Prefect server every ORCH component talks to."""

    api_url: str | None = Field(
        default=None,
        description="An existing Prefect server's API (PREFECT_API_URL). Unset: `orch up` starts one.",
    )
    server_host: str = Field(default="127.0.0.1", description="Address the Prefect server `orch up` starts "
                             "listens on (PREFECT_SERVER_API_HOST).")
    server_port: int = Field(default=4200, gt=0, lt=65536, description="Port of the Prefect server `orch up` "
                             "starts (PREFECT_SERVER_API_PORT).")
    worker_poll_seconds: float = Field(default=2, gt=0, le=60, description="How often the workers `orch up` "
                                       "starts ask for runs (their PREFECT_WORKER_QUERY_SECONDS, unless that is "
                                       "set); bounds the wait before a run starts.")
    auth_string: StrongSecret | None = Field(
        default=None,
        description="PREFECT_API_AUTH_STRING (or PREFECT_SERVER_API_AUTH_STRING): the `user:password` "
                    "Prefect's API and UI ask for. Generated locally for the server `orch up` starts; "
                    "required in production.",
    )

    def resolved_api_url(self) -> str:
        """The Prefect API every ORCH component talks to."""
        return self.api_url or f"http://{self.server_host}:{self.server_port}/api"
