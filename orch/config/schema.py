"""The typed shape of ORCH-Next's configuration.

Every section of the operations guide's YAML is a pydantic model with ``extra="forbid"`` so that a
mistyped key is an error with its key path instead of a setting that silently does nothing. Defaults are
the zero-config local profile: everything here runs on one machine without a config file.
"""

from __future__ import annotations

import re
import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3,
               "GB": 1024**3, "T": 1024**4, "TB": 1024**4}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        """``${VAR:-}`` yields ``""``; for an optional key that means "not configured", not "empty"."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if data.get(name) == "" and field.default is None:
                    data = {**data, name: None}
        return data


def parse_size(value: int | str) -> int:
    """Turn ``"100MB"``/``"10 KB"``/``1048576`` into bytes; the guide writes sizes as strings."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 100MB")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"must be a size such as 100MB, got {value!r}")
    number, unit = match.groups()
    size = int(float(number) * _SIZE_UNITS[unit.upper()])
    if size <= 0:
        raise ValueError("must be greater than 0")
    return size


class DatabaseSettings(Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. sqlite:///relative/path.db or postgresql+psycopg2://user:pw@host/db. "
        "Default: sqlite:///<data_dir>/orch.db. DATABASE_URL overrides it.",
    )
    path: str | None = Field(
        default=None, description="The guide's SQLite file path; used only when url is not set."
    )
    pool_size: int = Field(default=10, gt=0, le=1000)
    timeout: float = Field(default=30, gt=0, description="Seconds to wait for a connection or a lock.")
    backup_interval: int = Field(default=3600, gt=0, description="Seconds between backups (guide key).")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"must be a sqlite:// or postgresql:// URL, got scheme {scheme!r}")
        return value


class RateLimitSettings(Section):
    requests_per_minute: int = Field(default=100, gt=0, description="Per user (per address when anonymous).")
    burst_size: int = Field(default=20, gt=0, description="At most this many of them in any one second.")
    storage_url: str | None = Field(default=None, description="redis://host:6379/0 to share the limit "
                                    "between API replicas; unset: this process's memory.")

    @field_validator("storage_url")
    @classmethod
    def _redis_or_memory(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "memory://")):
            raise ValueError(f"must be a redis://, rediss:// or memory:// URL, got {value!r}")
        return value


class LockoutSettings(Section):
    """Login throttling (the section keeps its historical name and keys).

    Nothing locks an account: failures are counted per (user, client address), and only that address
    waits, longer after each further failure, so an attacker elsewhere cannot lock the owner out. All
    addresses together only slow the user down, briefly, and never at an address that has logged in as
    that user before (see :mod:`orch.security.login`)."""

    max_failures: int = Field(default=5, gt=0, description="Failed logins for one user from one address "
                              "before that address must wait between attempts.")
    window_seconds: int = Field(default=900, gt=0, description="A failure count is forgotten after this "
                                "long without failures (counted from the end of the last wait).")
    lockout_seconds: int = Field(default=900, gt=0, description="The longest wait one address is given; "
                                 "the wait doubles from base_delay_seconds with each further failure.")
    base_delay_seconds: float = Field(default=1.0, gt=0, le=3600, description="The first wait, after "
                                      "max_failures failures.")
    user_max_failures: int = Field(default=20, gt=0, description="Failed logins for one user from all "
                                   "addresses together before new addresses are slowed down.")
    user_max_delay_seconds: float = Field(default=5.0, gt=0, le=60, description="The longest wait of that "
                                          "slow-down: short, so it never amounts to a lockout.")
    known_address_days: int = Field(default=30, gt=0, le=3650, description="An address that logged in as "
                                    "a user is exempt from that user's slow-down this long after its last "
                                    "success.")


class PasswordPolicySettings(Section):
    min_length: int = Field(default=12, ge=8, le=1024)
    require_uppercase: bool = True
    require_lowercase: bool = True
    require_numbers: bool = True
    require_symbols: bool = True


class SecuritySettings(Section):
    jwt_secret: SecretStr | None = Field(default=None, description="Generated locally when unset.")
    jwt_expiry: int = Field(default=3600, gt=0, description="Token lifetime in seconds.")
    webhook_secret: SecretStr | None = Field(default=None, description="Generated locally when unset.")
    mcp_token: SecretStr | None = Field(default=None, description="ORCH_MCP_TOKEN; generated locally.")
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    password_policy: PasswordPolicySettings = Field(default_factory=PasswordPolicySettings)
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    webhook_tolerance_seconds: int = Field(default=300, gt=0, le=3600, description="Oldest webhook "
                                           "signature timestamp accepted.")
    identity_cache_seconds: float = Field(default=1.0, ge=0, le=60, description="How long one API process "
                                          "reuses a token's checked identity (user enabled, role) before "
                                          "reading it again; 0 reads it on every request. Changes made "
                                          "through the same process's /users apply at once.")

    @field_validator("jwt_secret", "webhook_secret", "mcp_token")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class AlertThresholds(Section):
    cpu_percent: float = Field(default=80, gt=0, le=100)
    memory_percent: float = Field(default=85, gt=0, le=100)
    disk_usage_percent: float = Field(default=90, gt=0, le=100)
    response_time_ms: float = Field(default=2000, gt=0)
    error_rate_percent: float = Field(default=5, gt=0, le=100)
    prefect_zombie_runs: int = Field(default=0, ge=0, description="Alert when a sweep finds more Prefect runs "
                                     "whose executor is gone than this; they are marked Crashed whatever it says.")


HealAction = Literal["restart", "isolate", "rollback"]
SupervisedProcess = Literal["api", "worker"]


def _no_repeated_actions(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("must not list an action twice")
    return value


class SelfHealingSettings(Section):
    enabled: bool = True
    max_retries: int = Field(default=3, ge=0, le=100, description="Attempts per action before escalating.")
    backoff_multiplier: float = Field(default=2, ge=1)
    backoff_seconds: float = Field(default=1, ge=0, description="Wait before the second attempt of an action; "
                                   "multiplied by backoff_multiplier for each further one.")
    actions: list[HealAction] = Field(default_factory=lambda: ["restart", "isolate", "rollback"])
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
        return _no_repeated_actions(value) or []


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
    url: str | None = Field(default=None, description="HTTP(S) URL answered with expected_status when healthy.")
    command: list[str] | None = Field(default=None, description="Healthy when it exits 0 within timeout.")
    supervised: SupervisedProcess | None = Field(default=None, description="Healthy while that `orch up` "
                                                 "process is alive.")
    expected_status: int = Field(default=200, ge=100, le=599)
    timeout: float = Field(default=5, gt=0, le=300)


class RestartAction(_OneOf):
    command: list[str] | None = None
    systemd_unit: str | None = Field(default=None, description="systemctl restart UNIT.")
    windows_service: str | None = Field(default=None, description="Restart-Service NAME (PowerShell).")
    supervised: SupervisedProcess | None = Field(default=None, description="An `orch up` process: stopped, "
                                                 "then restarted by the stack's supervisor.")


class IsolateAction(_OneOf):
    core: str | None = Field(default=None, description="Stop dispatching ORCH tasks to this core.")
    command: list[str] | None = Field(default=None, description="Takes the target out of rotation.")


class RollbackAction(_OneOf):
    command: list[str] | None = None
    deployment: str | None = Field(default=None, description="`flow/deployment` that restores the previous "
                                   "known-good version; run and waited for.")


HOST_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class TargetSettings(Section):
    """Something ORCH watches and heals: how to tell it is healthy and how to act on it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    health_check: TargetHealthCheck
    restart: RestartAction | None = None
    isolate: IsolateAction | None = None
    rollback: RollbackAction | None = None
    actions: list[HealAction] | None = Field(default=None, description="Order of healing actions for this "
                                             "target; default: self_healing.actions that it configures.")
    severity: Literal["warning", "critical"] = "critical"
    host: str | None = Field(default=None, pattern=HOST_NAME_PATTERN,
                             description="The host the target lives on: its sweep checks it and its heals run "
                                         "there. Unset: the host whose configuration lists it "
                                         "(monitoring.host_name).")

    @field_validator("actions")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        return _no_repeated_actions(value)

    @model_validator(mode="after")
    def _listed_actions_are_configured(self) -> TargetSettings:
        missing = [action for action in self.actions or [] if getattr(self, action) is None]
        if missing:
            raise ValueError(f"actions lists {', '.join(missing)} but the target does not configure it")
        return self


class AlertingSettings(Section):
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


class MonitoringSettings(Section):
    interval: int = Field(default=60, gt=0, description="Seconds between monitoring sweeps.")
    metrics_retention: int = Field(default=2592000, gt=0, description="Seconds samples, alert changes "
                                   "(alert_events) and self-healing runs (heal_runs) are kept.")
    alert_thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    self_healing: SelfHealingSettings = Field(default_factory=SelfHealingSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    disk_paths: list[str] = Field(default_factory=lambda: ["/"], description="Mount points whose usage is sampled.")
    orch_targets: bool = Field(default=True, description="Watch ORCH's own API and worker as targets "
                               "(restarted through `orch up`'s supervisor).")
    targets: list[TargetSettings] = Field(default_factory=list)
    host_name: str = Field(default_factory=lambda: socket.gethostname()[:64] or "localhost",
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


class SlackSettings(Section):
    webhook_url: SecretStr | None = None
    channel: str = "#orch-alerts"
    username: str = "ORCH-Next"


class EmailSettings(Section):
    smtp_server: str | None = None
    smtp_port: int = Field(default=587, gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "orch@localhost"
    to_addresses: list[str] = Field(default_factory=list)

    @field_validator("from_address")
    @classmethod
    def _from_is_address(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"must be an e-mail address, got {value!r}")
        return value

    @field_validator("to_addresses")
    @classmethod
    def _to_are_addresses(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if "@" not in address]
        if bad:
            raise ValueError(f"must be e-mail addresses, got {', '.join(map(repr, bad))}")
        return value


class WebhookNotificationSettings(Section):
    url: SecretStr | None = Field(default=None, description="Receiver of Alertmanager-format webhook JSON; "
                                  "unset: none.")
    receiver: str = Field(default="orch-next", description="The payload's `receiver` field.")
    external_url: str = Field(default="", description="The payload's `externalURL` (e.g. the Prefect UI).")


class NotificationSettings(Section):
    slack: SlackSettings = Field(default_factory=SlackSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    webhook: WebhookNotificationSettings = Field(default_factory=WebhookNotificationSettings)
    mention_on_critical: bool = True


class LoggingSettings(Section):
    level: str = "INFO"
    format: Literal["json", "text"] = "json"
    file: str | None = Field(default="logs/orch-next.log", description="Empty or null: no log file.")
    audit_file: str | None = Field(default="logs/audit.log", description="Audit trail as JSON lines "
                                   "(beside the database copy); empty or null: database only.")
    max_size: int = Field(default=100 * 1024**2, description="Bytes, or a string such as 100MB.")
    backup_count: int = Field(default=10, ge=0)
    console_level: str = Field(default="WARNING", description="Level of the stderr copy in a process that "
                               "also writes `file` (the API): a line per request is then written once, to "
                               "the rotated file, while the journal or orch up's api.log keep warnings and "
                               "errors. INFO copies every line to stderr too. Other processes log `level` "
                               "to stderr, their only output.")
    loggers: dict[str, str] = Field(default_factory=lambda: {"uvicorn": "WARNING"})

    @field_validator("level", "console_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = str(value).upper()
        if upper not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return upper

    @field_validator("loggers")
    @classmethod
    def _module_levels(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, level in value.items():
            upper = str(level).upper()
            if upper not in LOG_LEVELS:
                raise ValueError(f"{name}: must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
            out[name] = upper
        return out

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)

    @field_validator("file", "audit_file")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class FeatureSettings(Section):
    enable_sse: bool = True
    enable_webhooks: bool = True
    enable_monitoring: bool = True
    enable_self_healing: bool = True
    max_concurrent_tasks: int = Field(default=100, gt=0)
    task_timeout_default: int = Field(default=300, gt=0)
    maintenance_mode: bool = Field(default=False, description="MAINTENANCE_MODE: state-changing API calls "
                                   "answer 503 and self-healing pauses; reads and health keep working.")
    docs: bool | None = Field(default=None, description="Serve /docs and the OpenAPI schema; unset: on "
                              "locally, off in production.")


class CoreSettings(Section):
    concurrency: int | None = Field(default=None, gt=0, description="Overrides dispatch.core_concurrency.")
    description: str = ""
    webhook_secret: SecretStr | None = Field(
        default=None, description="This core's own webhook signing secret: a `task.*` webhook signed with it "
        "may move only this core's tasks, and one signed with the shared security.webhook_secret may not "
        "move them any more. Unset: the shared secret reports for this core.")

    @field_validator("webhook_secret")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class DispatchSettings(Section):
    """The task queue: ordering, limits, leases and what actions may touch."""

    aging_seconds: float = Field(default=60, gt=0, description="One priority level gained per this many "
                                 "seconds of waiting (bounds how long a low task can wait).")
    max_queue_depth: int = Field(default=10000, gt=0, description="Queued tasks above which dispatch is refused.")
    retry_after_seconds: int = Field(default=5, gt=0, description="What a refused dispatch is told to wait.")
    core_concurrency: int = Field(default=1, gt=0, description="Running tasks per core unless the core says otherwise.")
    cores: dict[str, CoreSettings] = Field(default_factory=dict, description="Declared cores; when any are "
                                           "declared, dispatch to an undeclared core is refused.")
    default_max_retries: int = Field(default=2, ge=0, le=20)
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


class BackupSettings(Section):
    """Verified backups of the ORCH database, their catalog and their retention."""

    directory: str | None = Field(default=None, description="Where backups and catalog.json live. "
                                  "Default: <data_dir>/backups.")
    retention_days: int = Field(default=30, gt=0, description="Backups older than this are pruned ...")
    keep_last: int = Field(default=7, ge=1, description="... except the newest this many verified ones.")
    compression_level: int = Field(default=1, ge=1, le=9, description="gzip level of SQLite backups.")
    lock_timeout: float = Field(default=300, gt=0, description="Seconds a backup or restore waits for the "
                                "orch:database lock (held by another backup, restore or maintenance).")
    pg_dump: str = Field(default="pg_dump", description="pg_dump executable (same major as the server).")
    pg_restore: str = Field(default="pg_restore", description="pg_restore executable.")


class MaintenanceSettings(Section):
    """Weekly database upkeep and what it purges."""

    events_retention_days: int = Field(default=90, gt=0, description="Events of finished tasks older than "
                                       "this are purged (the task rows stay).")
    audit_retention_days: int = Field(default=730, gt=0, description="Audit records older than this are "
                                      "purged; long by default, since audits answer questions late.")
    log_retention_days: int = Field(default=7, gt=0, description="Rotated logs older than this are removed "
                                    "by recovery when the disk is low (the guide's find -mtime +7).")


class ResourceGuardSettings(Section):
    """The guide's resource guard: warn (or fail, when strict) on a busy CPU or a nearly full disk."""

    cpu_percent: float = Field(default=80, gt=0, le=100, description="CPU use above which the guard trips.")
    min_free_disk: int = Field(default=1024**3, description="Free bytes (or a size such as 1GB) below which "
                               "the guard trips, on the disk holding data_dir.")
    strict: bool = Field(default=False, description="Fail instead of warn; RESOURCE_GUARD_STRICT=true also "
                         "turns it on.")

    @field_validator("min_free_disk", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)


class SupplyChainSettings(Section):
    """SBOM, its signature, and the security scan (paths resolve against ORCH_HOME, the checkout)."""

    sbom_path: str = Field(default="observability/sbom/sbom.json", description="Where the SBOM is written "
                           "(sbom.sig and sbom.pub.pem go beside it).")
    keys_dir: str = Field(default="observability/sbom/keys", description="private_key.pem (mode 0600) and "
                          "public_key.pem used to sign and verify the SBOM.")
    signing_key_block: str | None = Field(default=None, description="Name of a Prefect Secret block holding "
                                          "the PEM private key; when set, the sbom flow signs with it.")
    reports_dir: str = Field(default="security_reports", description="Security reports and scanner output.")
    repo_dir: str = Field(default=".", description="The repository the secret scan and bandit look at.")
    code_paths: list[str] = Field(default_factory=lambda: ["orch", "flows", "tasks", "blocks", "deployments",
                                                           "scripts"],
                                  description="Directories of repo_dir that bandit and semgrep scan.")
    secrets_baseline: str = Field(default=".secrets.baseline", description="Accepted secret-scan findings "
                                  "(detect-secrets baseline format), relative to repo_dir.")
    eol_table: str = Field(default="security/eol.yaml", description="The dated EOL table, relative to repo_dir.")
    semgrep_rules: str = Field(default="security/semgrep", description="Semgrep rules, relative to repo_dir.")
    osv_db_dir: str | None = Field(default=None, description="An offline OSV database (PyPI advisories as "
                                   "JSON files or all.zip) for the dependency audit; unset: pip-audit online.")
    audit_timeout: int = Field(default=120, gt=0, description="Seconds the dependency audit may take.")
    fail_on_severity: Literal["low", "medium", "high"] = Field(default="medium", description="Lowest bandit/"
                                                               "semgrep severity that fails the scan.")
    resource_guard: ResourceGuardSettings = Field(default_factory=ResourceGuardSettings)


class ApiSettings(Section):
    host: str = Field(default="127.0.0.1", description="ORCH_HOST overrides it.")
    port: int = Field(default=8000, gt=0, lt=65536, description="ORCH_PORT overrides it.")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:5001", "http://localhost:5001"]
    )
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host headers the API answers (TrustedHostMiddleware); add the name clients use, "
                    "or '*' behind a proxy that checks it.")
    max_body_bytes: int = Field(default=1024**2, gt=0, description="Larger request bodies get 413. Bytes or "
                                "a size such as 1MB.")
    tls_cert_file: str | None = Field(default=None, description="With tls_key_file: serve HTTPS (TLS 1.2+).")
    tls_key_file: str | None = None
    sse_heartbeat_seconds: float = Field(default=15, gt=0, le=300, description="Keep-alive on SSE streams.")
    sse_poll_seconds: float = Field(default=0.25, gt=0, le=10, description="How often new events are "
                                    "looked for (one query per API process, whatever the client count).")
    health_cache_seconds: float = Field(default=2, ge=0, le=60, description="How long /health reuses a "
                                        "component check, so probes at any rate cost one check per period.")
    workers: int = Field(default=1, ge=1, le=64, description="API worker processes on one port (the guide's "
                         "uvicorn --workers). Above 1: the rate limit must be shared "
                         "(security.rate_limit.storage_url), /metrics adds up every worker, and the workers "
                         "append to logging.file, which logrotate then rotates.")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="A request line and headers larger "
                                  "than this get 431 and the connection is closed before more is read.")
    max_headers: int = Field(default=100, ge=8, le=10_000, description="More header fields get 431.")
    max_json_depth: int = Field(default=64, ge=1, le=256, description="JSON bodies nesting deeper get 422 "
                                "before any parser recurses into them.")
    max_anonymous_streams: int = Field(default=100, ge=1, description="Concurrent /events/health streams per "
                                       "API process; one more gets 503 with Retry-After.")
    max_streams_per_user: int = Field(default=20, ge=1, description="Concurrent /sse/events streams of one "
                                      "user per API process; one more gets 429 with Retry-After.")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="FORWARDED_ALLOW_IPS: the proxies (addresses or networks, comma-separated) whose "
                    "X-Forwarded-For and X-Forwarded-Proto the API believes. Empty (the default): nobody's, "
                    "so a client cannot choose the address the rate limit and the audit log see.")

    @field_validator("max_body_bytes", "max_header_bytes", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _address_list(cls, value: list[str] | str) -> list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self


class PrefectSettings(Section):
    api_url: str | None = Field(
        default=None,
        description="An existing Prefect server's API (PREFECT_API_URL). Unset: `orch up` starts one.",
    )
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=4200, gt=0, lt=65536, description="PREFECT_SERVER_API_PORT.")
    worker_poll_seconds: float = Field(default=2, gt=0, le=60)
    auth_string: SecretStr | None = Field(
        default=None,
        description="PREFECT_API_AUTH_STRING (or PREFECT_SERVER_API_AUTH_STRING): the `user:password` "
                    "Prefect's API and UI ask for. Generated locally for the server `orch up` starts; "
                    "required in production.",
    )

    @field_validator("auth_string")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """The one credential between the network and every ORCH flow (restore included)."""
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def resolved_api_url(self) -> str:
        """The Prefect API every ORCH component talks to."""
        return self.api_url or f"http://{self.server_host}:{self.server_port}/api"


class Settings(BaseSettings):
    """The whole configuration. ``environment: production`` refuses to invent secrets.

    A pydantic-settings model whose only source is what :mod:`orch.config.loader` layered together
    (defaults < YAML file < environment), so there is exactly one place that decides precedence.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args, **kwargs):  # type: ignore[override]
        return (init_settings,)

    environment: Literal["local", "production"] = "local"
    data_dir: str = Field(default="data", description="Relative paths resolve against ORCH_HOME or the CWD.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    supply_chain: SupplyChainSettings = Field(default_factory=SupplyChainSettings)

    @model_validator(mode="after")
    def _workers_share_the_rate_limit(self) -> Settings:
        storage = self.security.rate_limit.storage_url
        if self.api.workers > 1 and (not storage or storage.startswith("memory://")):
            raise ValueError(f"api.workers is {self.api.workers} but security.rate_limit.storage_url is not a "
                             "shared store: each worker would count in its own memory and allow "
                             f"{self.api.workers} times the limit; set it to redis://host:6379/0")
        return self

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, so logging can mask them wherever they appear."""
        security, notifications = self.security, self.notifications
        candidates = [security.jwt_secret, security.webhook_secret, security.mcp_token,
                      notifications.slack.webhook_url, notifications.email.password,
                      notifications.webhook.url, self.prefect.auth_string]
        values = [c.get_secret_value() for c in candidates if c is not None]
        values += [c.webhook_secret.get_secret_value() for c in self.dispatch.cores.values() if c.webhook_secret]
        if self.database.url and "@" in self.database.url:
            from urllib.parse import unquote, urlsplit

            password = urlsplit(self.database.url).password
            values += [unquote(password)] if password else []
        return values
