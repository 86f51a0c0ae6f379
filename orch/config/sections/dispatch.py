"""The ``dispatch`` section: the task queue, its cores, limits and leases, and what actions may touch."""

from __future__ import annotations

from pydantic import Field, model_validator

from orch.config.sections.base import Section, StrongSecret


class CoreSettings(Section):
    """A declared core (``dispatch.cores.<id>``)."""

    concurrency: int | None = Field(default=None, gt=0, description="Overrides dispatch.core_concurrency.")
    description: str = Field(default="", description="A note for operators; ORCH does not read it.")
    webhook_secret: StrongSecret | None = Field(
        default=None, description="This core's own webhook signing secret: a `task.*` webhook signed with it "
        "may move only this core's tasks, and one signed with the shared security.webhook_secret may not "
        "move them any more. Unset: the shared secret reports for this core.")


class DispatchSettings(Section):
    """The task queue: ordering, limits, leases and what actions may touch."""

    aging_seconds: float = Field(default=60, gt=0, description="One priority level gained per this many "
                                 "seconds of waiting (bounds how long a low task can wait).")
    max_queue_depth: int = Field(default=10000, gt=0, description="Queued tasks above which dispatch is refused.")
    retry_after_seconds: int = Field(default=5, gt=0, description="What a refused dispatch is told to wait.")
    core_concurrency: int = Field(default=1, gt=0, description="Running tasks per core unless the core says otherwise.")
    cores: dict[str, CoreSettings] = Field(default_factory=dict, description="Declared cores; when any are "
                                           "declared, dispatch to an undeclared core is refused.")
    default_max_retries: int = Field(default=2, ge=0, le=20, description="Retries of a failed task when its "
                                     "dispatch names none.")
    lease_seconds: float = Field(default=30, gt=0, description="A claimed task's lease; the dispatcher renews it. "
                                 "A task whose lease expires (its dispatcher died) is retried or failed.")
    stay_seconds: float = Field(default=300, gt=0, description="How long a `stay` task keeps its core reserved "
                                "for the same owner after it ends.")
    max_params_bytes: int = Field(default=65536, gt=0, description="Largest JSON size of a task's params.")
    shell_allowlist: list[str] = Field(default_factory=list, description="Executables the shell action may run.")
    http_allowlist: list[str] = Field(default_factory=list, description="Hosts the http action may call.")
    max_output_bytes: int = Field(default=65536, gt=0, description="Captured output kept per shell/http task.")
    concurrency: int = Field(default=16, gt=0, le=64, description="Tasks one dispatcher runs at once.")
    poll_seconds: float = Field(default=0.05, gt=0, le=10, description="How often an idle dispatcher "
                                "looks for work (bounds the wait from dispatch to start).")
    execution_nice: int = Field(default=10, ge=0, le=19, description="CPU priority (nice) `orch up` gives the "
                                "worker and its Prefect server, below the API's, so that requests are answered "
                                "while tasks fill the cores; 0 = the API's.")

    @model_validator(mode="after")
    def _own_webhook_secrets(self) -> DispatchSettings:
        """A webhook is attributed to the core whose secret signs it, so two cores sharing one could each
        report on the other's tasks."""
        seen: dict[str, str] = {}
        for core_id, core in self.cores.items():
            if core.webhook_secret is not None:
                other = seen.setdefault(core.webhook_secret.get_secret_value(), core_id)
                if other != core_id:
                    raise ValueError(f"cores {other} and {core_id} have the same webhook_secret; each core "
                                     "needs its own")
        return self
