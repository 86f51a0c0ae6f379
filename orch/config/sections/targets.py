"""``monitoring.targets``: something ORCH watches and heals, how to tell it is healthy and how to act on it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from orch.config.sections.base import Section

HealAction = Literal["restart", "isolate", "rollback"]
SupervisedProcess = Literal["api", "worker"]


def no_repeated_actions(value: list[str] | None) -> list[str] | None:
    """An action listed twice would be tried twice in one plan; that is a mistake, not a retry setting."""
    if value is not None and len(set(value)) != len(value):
        raise ValueError("must not list an action twice")
    return value


def _argv(value: Any) -> Any:
    """Commands may be written as one string (split like a shell would, but run without one) or a list."""
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    return value


class _OneOf(Section):
    """An action or check configured in exactly one way; which ways exist is the model's fields."""

    @model_validator(mode="after")
    def _exactly_one(self) -> _OneOf:
        ways = [name for name in self._ways() if getattr(self, name)]
        if len(ways) != 1:
            raise ValueError(f"needs exactly one of {', '.join(self._ways())}"
                             + (f" (got {', '.join(ways)})" if ways else " (missing command)"))
        return self

    @classmethod
    def _ways(cls) -> list[str]:
        return [name for name in cls.model_fields if name not in ("expected_status", "timeout")]

    @field_validator("command", mode="before", check_fields=False)
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _argv(value)


class TargetHealthCheck(_OneOf):
    """How a sweep tells the target is healthy: exactly one of url, command, supervised."""

    url: str | None = Field(default=None, description="HTTP(S) URL answered with expected_status when healthy.")
    command: list[str] | None = Field(default=None, description="Healthy when it exits 0 within timeout. A "
                                      "list, or one string split as a shell would (it runs without one).")
    supervised: SupervisedProcess | None = Field(default=None, description="Healthy while that `orch up` "
                                                 "process is alive.")
    expected_status: int = Field(default=200, ge=100, le=599, description="The HTTP status of a healthy url.")
    timeout: float = Field(default=5, gt=0, le=300, description="Seconds the url or command may take; longer "
                           "is unhealthy.")


class RestartAction(_OneOf):
    """The target's restart action: exactly one of command, systemd_unit, windows_service, supervised."""

    command: list[str] | None = Field(default=None, description="Run to restart the target; must exit 0 "
                                      "within 120 s. A list, or one string split as a shell would (it runs "
                                      "without one).")
    systemd_unit: str | None = Field(default=None, description="systemctl restart UNIT.")
    windows_service: str | None = Field(default=None, description="Restart-Service NAME (PowerShell).")
    supervised: SupervisedProcess | None = Field(default=None, description="An `orch up` process: stopped, "
                                                 "then restarted by the stack's supervisor.")


class IsolateAction(_OneOf):
    """The target's isolate action: exactly one of core, command."""

    core: str | None = Field(default=None, description="Stop dispatching ORCH tasks to this core.")
    command: list[str] | None = Field(default=None, description="Run to take the target out of rotation; must "
                                      "exit 0 within 120 s. A list, or one string split as a shell would.")


class RollbackAction(_OneOf):
    """The target's rollback action: exactly one of command, deployment."""

    command: list[str] | None = Field(default=None, description="Run to roll the target back; must exit 0 "
                                      "within 120 s. A list, or one string split as a shell would (it runs "
                                      "without one).")
    deployment: str | None = Field(default=None, description="`flow/deployment` that restores the previous "
                                   "known-good version; run and waited for.")


HOST_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class TargetSettings(Section):
    """Something ORCH watches and heals: how to tell it is healthy and how to act on it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique among the targets; the alerts "
                      "and heal runs about it carry it.")
    health_check: TargetHealthCheck = Field(description="Required: how a sweep tells the target is healthy, "
                                            "exactly one of url, command, supervised.")
    restart: RestartAction | None = Field(default=None, description="How to restart the target, exactly one of "
                                          "command, systemd_unit, windows_service, supervised; unset: it "
                                          "cannot be restarted.")
    isolate: IsolateAction | None = Field(default=None, description="How to take the target out of service, "
                                          "exactly one of core, command; unset: it cannot be isolated.")
    rollback: RollbackAction | None = Field(default=None, description="How to roll the target back, exactly one "
                                            "of command, deployment; unset: it cannot be rolled back.")
    actions: list[HealAction] | None = Field(default=None, description="Order of healing actions for this "
                                             "target; default: self_healing.actions that it configures.")
    severity: Literal["warning", "critical"] = Field(default="critical", description="Shown with the target "
                                                     "in GET /monitoring/targets; its target_down alert is "
                                                     "critical whatever this says.")
    host: str | None = Field(default=None, pattern=HOST_NAME_PATTERN,
                             description="The host the target lives on: its sweep checks it and its heals run "
                                         "there. Unset: the host whose configuration lists it "
                                         "(monitoring.host_name).")

    @field_validator("actions")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        return no_repeated_actions(value)

    @model_validator(mode="after")
    def _listed_actions_are_configured(self) -> TargetSettings:
        missing = [action for action in self.actions or [] if getattr(self, action) is None]
        if missing:
            raise ValueError(f"actions lists {', '.join(missing)} but the target does not configure it")
        return self
