"""The root of ORCH-Next's configuration: :class:`Settings`, one field per section.

Each section is a model of its own in :mod:`orch.config.sections` (one module per section, as Prefect's
``prefect.settings.models``), with ``extra="forbid"`` so that a mistyped key is an error with its key path
instead of a setting that silently does nothing. Defaults are the zero-config local profile: everything here
runs on one machine without a config file. The section models are importable from here too, which is where
the rest of ORCH imports them from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orch.config.sections.api import ApiSettings
from orch.config.sections.backup import BackupSettings
from orch.config.sections.database import DatabaseSettings
from orch.config.sections.dispatch import CoreSettings, DispatchSettings
from orch.config.sections.features import FeatureSettings
from orch.config.sections.logging import LoggingSettings
from orch.config.sections.maintenance import MaintenanceSettings
from orch.config.sections.monitoring import (
    AlertingSettings,
    AlertThresholds,
    MonitoringSettings,
    SelfHealingSettings,
)
from orch.config.sections.notifications import (
    EmailSettings,
    NotificationSettings,
    SlackSettings,
    WebhookNotificationSettings,
)
from orch.config.sections.prefect import PrefectSettings
from orch.config.sections.security import (
    LockoutSettings,
    PasswordPolicySettings,
    RateLimitSettings,
    SecuritySettings,
)
from orch.config.sections.supply_chain import ResourceGuardSettings, SupplyChainSettings
from orch.config.sections.targets import (
    IsolateAction,
    RestartAction,
    RollbackAction,
    TargetHealthCheck,
    TargetSettings,
)

__all__ = [
    "AlertThresholds", "AlertingSettings", "ApiSettings", "BackupSettings", "CoreSettings", "DatabaseSettings",
    "DispatchSettings", "EmailSettings", "FeatureSettings", "IsolateAction", "LockoutSettings", "LoggingSettings",
    "MaintenanceSettings", "MonitoringSettings", "NotificationSettings", "PasswordPolicySettings", "PrefectSettings",
    "RateLimitSettings", "ResourceGuardSettings", "RestartAction", "RollbackAction", "SecuritySettings",
    "SelfHealingSettings", "Settings", "SlackSettings", "SupplyChainSettings", "TargetHealthCheck", "TargetSettings",
    "WebhookNotificationSettings",
]


class Settings(BaseSettings):
    """The whole configuration. ``environment: production`` refuses to invent secrets.

    Read from the environment (``ORCH_<SECTION>__<KEY>``, the guide's names), the YAML file and the defaults
    by :func:`orch.config.loader.load_settings`, through the sources of :mod:`orch.config.sources`. A
    ``Settings`` built in code holds exactly what it is given: nothing from the environment leaks into it.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        validate_assignment=True,
        env_prefix="ORCH_",
        env_nested_delimiter="__",
        env_ignore_empty=True,  # an empty variable is not set, as ${VAR:-} is "not configured"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what it is given: the loader passes its sources in (``_build_sources``) with the paths and
        environment of that one load."""
        return (init_settings,)

    environment: Literal["local", "production"] = Field(
        default="local", description="production: secrets must be given (nothing is generated) and /docs is off "
        "unless features.docs says otherwise.")
    data_dir: str = Field(default="data", description="Where ORCH keeps its database, generated secrets, "
                          "backups, the Prefect server's files and `orch up`'s logs. Relative paths resolve "
                          "against ORCH_HOME or the CWD.")
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
        for url in (self.database.url, self.security.rate_limit.storage_url):  # their passwords
            if url and "@" in url:
                from urllib.parse import unquote, urlsplit

                password = urlsplit(url).password
                values += [unquote(password)] if password else []
        return values
