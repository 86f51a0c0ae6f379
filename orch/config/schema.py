"""The typed shape of ORCH-Next's configuration.

Every section of the operations guide's YAML is a pydantic model with ``extra="forbid"`` so that a
mistyped key is an error with its key path instead of a setting that silently does nothing. Defaults are
the zero-config local profile: everything here runs on one machine without a config file.
"""

from __future__ import annotations

import re
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
    requests_per_minute: int = Field(default=100, gt=0)
    burst_size: int = Field(default=20, gt=0)


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


class SelfHealingSettings(Section):
    enabled: bool = True
    max_retries: int = Field(default=3, ge=0, le=100)
    backoff_multiplier: float = Field(default=2, ge=1)
    actions: list[Literal["restart", "isolate", "rollback"]] = Field(
        default_factory=lambda: ["restart", "isolate", "rollback"]
    )

    @field_validator("actions")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not list an action twice")
        return value


class MonitoringSettings(Section):
    interval: int = Field(default=60, gt=0, description="Seconds between monitoring sweeps.")
    metrics_retention: int = Field(default=2592000, gt=0, description="Seconds samples are kept.")
    alert_thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    self_healing: SelfHealingSettings = Field(default_factory=SelfHealingSettings)


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


class NotificationSettings(Section):
    slack: SlackSettings = Field(default_factory=SlackSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    mention_on_critical: bool = True


class LoggingSettings(Section):
    level: str = "INFO"
    format: Literal["json", "text"] = "json"
    file: str | None = Field(default="logs/orch-next.log", description="Empty or null: no log file.")
    max_size: int = Field(default=100 * 1024**2, description="Bytes, or a string such as 100MB.")
    backup_count: int = Field(default=10, ge=0)
    loggers: dict[str, str] = Field(default_factory=lambda: {"uvicorn": "WARNING"})

    @field_validator("level")
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

    @field_validator("file")
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
    docs: bool = Field(default=True, description="Serve /docs and the OpenAPI schema (turn off in production).")


class CoreSettings(Section):
    concurrency: int | None = Field(default=None, gt=0, description="Overrides dispatch.core_concurrency.")
    description: str = ""


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


class ApiSettings(Section):
    host: str = Field(default="127.0.0.1", description="ORCH_HOST overrides it.")
    port: int = Field(default=8000, gt=0, lt=65536, description="ORCH_PORT overrides it.")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:5001", "http://localhost:5001"]
    )


class PrefectSettings(Section):
    api_url: str | None = Field(
        default=None,
        description="An existing Prefect server's API (PREFECT_API_URL). Unset: `orch up` starts one.",
    )
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=4200, gt=0, lt=65536, description="PREFECT_SERVER_API_PORT.")
    worker_poll_seconds: float = Field(default=2, gt=0, le=60)

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

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, so logging can mask them wherever they appear."""
        security, notifications = self.security, self.notifications
        candidates = [security.jwt_secret, security.webhook_secret, security.mcp_token,
                      notifications.slack.webhook_url, notifications.email.password]
        values = [c.get_secret_value() for c in candidates if c is not None]
        if self.database.url and "@" in self.database.url:
            from urllib.parse import unquote, urlsplit

            password = urlsplit(self.database.url).password
            values += [unquote(password)] if password else []
        return values
