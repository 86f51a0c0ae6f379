"""The ``monitoring`` section: the sweep, its alert thresholds and rules, and self-healing."""

from __future__ import annotations

import socket

from pydantic import Field, field_validator

from orch.config.sections.base import Section
from orch.config.sections.targets import HOST_NAME_PATTERN, HealAction, TargetSettings, no_repeated_actions


class AlertThresholds(Section):
    """The values above which this host's alerts fire (after alerting.for_seconds, except prefect_zombie_runs)."""

    cpu_percent: float = Field(default=80, gt=0, le=100, description="CPU use (cpu_high, warning).")
    memory_percent: float = Field(default=85, gt=0, le=100, description="Memory use (memory_high, warning).")
    disk_usage_percent: float = Field(default=90, gt=0, le=100, description="Use of each monitoring.disk_paths "
                                      "entry (disk_full, critical); also where recovery starts freeing space.")
    response_time_ms: float = Field(default=2000, gt=0, description="The sweep's probe of the API's /health "
                                    "(api_slow, warning); also the log analysis's slow-request threshold.")
    error_rate_percent: float = Field(default=5, gt=0, le=100, description="5xx share of API requests since the "
                                      "last sweep (api_errors, warning).")
    prefect_zombie_runs: int = Field(default=0, ge=0, description="Alert when a sweep finds more Prefect runs "
                                     "whose executor is gone than this; they are marked Crashed whatever it says.")


class SelfHealingSettings(Section):
    """How a firing target_down alert is healed: which actions, how often, with whose approval."""

    enabled: bool = Field(default=True, description="Heal at all; features.enable_self_healing must be on "
                          "too.")
    max_retries: int = Field(default=3, ge=0, le=100, description="Attempts per action before escalating.")
    backoff_multiplier: float = Field(default=2, ge=1, description="Each further wait between attempts is "
                                      "this many times the one before.")
    backoff_seconds: float = Field(default=1, ge=0, description="Wait before the second attempt of an action; "
                                   "multiplied by backoff_multiplier for each further one.")
    actions: list[HealAction] = Field(default_factory=lambda: ["restart", "isolate", "rollback"],
                                      description="The actions tried in order, for targets without their own "
                                      "list; an action a target does not configure is skipped.")
    settle_seconds: float = Field(default=15, gt=0, description="After an attempt, how long the target's health "
                                  "check is retried before the attempt counts as failed.")
    max_runs_per_hour: int = Field(default=3, gt=0, description="Circuit breaker: healing runs per target per "
                                   "hour; beyond it healing stops and a human is paged.")
    require_approval: list[HealAction] = Field(default_factory=list, description="Actions that pause for "
                                               "approval in the Prefect UI (isolate, rollback are destructive).")
    approval_timeout: int = Field(default=300, gt=0, description="Seconds to wait for approval; timeout = no.")
    dry_run: bool = Field(default=False, description="Log and audit the plan, change nothing.")

    @field_validator("actions", "require_approval")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        return no_repeated_actions(value) or []


class AlertingSettings(Section):
    """When an alert fires, repeats and counts as flapping, and which metrics are watched for anomalies."""

    for_seconds: float = Field(default=120, ge=0, description="A threshold must be crossed this long before "
                               "its alert fires (pending until then).")
    target_for_seconds: float = Field(default=0, ge=0, description="Same for a failing target health check.")
    repeat_interval: int = Field(default=3600, gt=0, description="Seconds between reminders of a firing alert.")
    flap_window: int = Field(default=900, gt=0, description="Window in which state changes are counted.")
    flap_threshold: int = Field(default=4, ge=2, description="This many fire/resolve changes in flap_window "
                                "hold the alert as flapping (one notification, no healing) until it settles.")
    ewma_metrics: list[str] = Field(default_factory=lambda: ["cpu_percent", "memory_percent",
                                                             "api_response_time_ms"],
                                    description="Metrics also watched for anomalies (EWMA).")
    ewma_alpha: float = Field(default=0.3, gt=0, lt=1, description="Weight of the newest sample.")
    ewma_deviations: float = Field(default=4, gt=0, description="Anomaly: this many standard deviations "
                                   "from the EWMA.")
    ewma_min_samples: int = Field(default=20, ge=3, description="Samples needed before anomalies are judged.")


def _hostname() -> str:
    """This machine's hostname (its first 64 characters)."""
    return socket.gethostname()[:64] or "localhost"


class MonitoringSettings(Section):
    """The monitoring sweep of this host: what it samples, judges, and heals."""

    interval: int = Field(default=60, gt=0, description="Seconds between monitoring sweeps.")
    metrics_retention: int = Field(default=2592000, gt=0, description="Seconds samples, alert changes "
                                   "(alert_events) and self-healing runs (heal_runs) are kept.")
    alert_thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    self_healing: SelfHealingSettings = Field(default_factory=SelfHealingSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    disk_paths: list[str] = Field(default_factory=lambda: ["/"], description="Mount points whose usage is sampled.")
    orch_targets: bool = Field(default=True, description="Watch ORCH's own API and worker as targets "
                               "(restarted through `orch up`'s supervisor).")
    targets: list[TargetSettings] = Field(default_factory=list, description="What ORCH watches and heals "
                                          "besides its own API and worker: how to tell each is healthy and how "
                                          "to act on it.")
    host_name: str = Field(default_factory=_hostname,
                           pattern=HOST_NAME_PATTERN,
                           description="This host's name in samples, alerts, targets and its work queue "
                                       "(host-<name>); default: the machine's hostname. Unique per host.")
    api_urls: list[str] = Field(default_factory=list, description="Base URLs of the ORCH API(s) this host's "
                                "sweep probes (e.g. http://10.0.0.5:8000); empty: this host's own API "
                                "(api.host:api.port).")
    host_down_after: float | None = Field(default=None, gt=0, description="Seconds without a sweep after "
                                          "which a host is down (host_down); default 3 x interval + 30.")

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, value: list[TargetSettings]) -> list[TargetSettings]:
        names = [target.name for target in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"target names must be unique: {', '.join(repeated)}")
        return value
