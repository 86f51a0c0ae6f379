"""The ``features`` section: switches for whole parts of ORCH, and the guide's task limits."""

from __future__ import annotations

from pydantic import Field

from orch.config.sections.base import Section


class FeatureSettings(Section):
    """Switches for whole parts of ORCH, maintenance mode, and the guide's task limits."""

    enable_sse: bool = Field(default=True, description="Serve GET /sse/events; off: it answers 404.")
    enable_webhooks: bool = Field(default=True, description="Accept POST /webhook; off: it answers 404.")
    enable_monitoring: bool = Field(default=True, description="Sweeps measure and judge; off: a sweep does "
                                    "nothing and /health reports monitoring as disabled.")
    enable_self_healing: bool = Field(default=True, description="Heal firing target alerts; "
                                      "monitoring.self_healing.enabled must be on too.")
    max_concurrent_tasks: int = Field(default=100, gt=0, description="Most ORCH tasks running at once over all "
                                      "cores; no more are claimed while that many run.")
    task_timeout_default: int = Field(default=300, gt=0, description="Seconds a task may run when its dispatch "
                                      "names no timeout.")
    maintenance_mode: bool = Field(default=False, description="MAINTENANCE_MODE: state-changing API calls "
                                   "answer 503 and self-healing pauses; reads and health keep working.")
    docs: bool | None = Field(default=None, description="Serve /docs and the OpenAPI schema; unset: on "
                              "locally, off in production.")
