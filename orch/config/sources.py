"""Where the configuration comes from: pydantic-settings sources, highest priority first.

1. :class:`EnvironmentSource`, pydantic-settings' environment source with ``env_prefix="ORCH_"`` and
   ``env_nested_delimiter="__"``: any key as ``ORCH_<SECTION>__<KEY>``, and ``ORCH_ENVIRONMENT``,
   ``ORCH_DATA_DIR`` for the top-level keys. A list or mapping is written as YAML (``'[a, b]'``).
2. :class:`GuideNamesSource`: the names the operations guide and Prefect already give some keys
   (:data:`ENV_ALIASES`: ``DATABASE_URL``, ``JWT_SECRET``, ``PREFECT_API_URL`` ...). Its own source because
   pydantic-settings' aliases only name top-level fields, and these name keys inside sections.
3. :class:`InterpolatedYamlSource`, pydantic-settings' YAML source with ``${VAR}`` interpolated.

Then the models' defaults. All three read one environment: the process environment over the ``.env`` file
(:func:`orch.config.loader.read_environ`), so a variable means the same wherever it is set, in a
``${VAR}``, as an override or as ``ORCH_CONFIG_PATH``. A mistake a source finds is kept in its ``errors``
(``key.path: problem``) to be reported with the validation errors, all at once; a file that cannot be
read at all raises :class:`~orch.config.errors.ConfigError` at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, YamlConfigSettingsSource

from orch.config.errors import ConfigError

# The names the guide (and Prefect) already give keys, mapped to their key paths. Later entries win when both
# are set (ORCH_LOG_LEVEL beats LOG_LEVEL); any ORCH_<SECTION>__<KEY> beats them all.
ENV_ALIASES: tuple[tuple[str, str], ...] = (
    ("DATABASE_URL", "database.url"),
    ("JWT_SECRET", "security.jwt_secret"),
    ("WEBHOOK_SECRET", "security.webhook_secret"),
    ("ORCH_MCP_TOKEN", "security.mcp_token"),
    ("SLACK_WEBHOOK_URL", "notifications.slack.webhook_url"),
    ("SMTP_SERVER", "notifications.email.smtp_server"),
    ("SMTP_PORT", "notifications.email.smtp_port"),
    ("SMTP_USERNAME", "notifications.email.username"),
    ("SMTP_PASSWORD", "notifications.email.password"),
    ("LOG_LEVEL", "logging.level"),
    ("ORCH_LOG_LEVEL", "logging.level"),
    ("ORCH_HOST", "api.host"),
    ("ORCH_PORT", "api.port"),
    ("FORWARDED_ALLOW_IPS", "api.forwarded_allow_ips"),
    ("PREFECT_API_URL", "prefect.api_url"),
    ("PREFECT_SERVER_API_HOST", "prefect.server_host"),
    ("PREFECT_SERVER_API_PORT", "prefect.server_port"),
    # The server's and the clients' names for one string; a client process sends the client one.
    ("PREFECT_SERVER_API_AUTH_STRING", "prefect.auth_string"),
    ("PREFECT_API_AUTH_STRING", "prefect.auth_string"),
    ("MAINTENANCE_MODE", "features.maintenance_mode"),
)

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class EnvironmentSource(EnvSettingsSource):
    """``ORCH_<SECTION>__<KEY>`` overrides, from the given environment rather than ``os.environ``.

    Beyond pydantic-settings' own source: an override naming no section (``ORCH_FEATURS__X``) is passed on
    so that validation calls it an unknown key instead of ignoring it, and a malformed one
    (``ORCH_API__``) is an error of its own.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.errors: list[str] = []
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        prefix, delimiter = self.env_prefix, self.env_nested_delimiter or ""
        kept: dict[str, str | None] = {}
        for name, value in sorted(self._environ.items()):
            if not name.startswith(prefix) or (value == "" and self.env_ignore_empty):
                continue  # the prefix in capitals: ``orch_api__port`` is nobody's override
            if delimiter in name and not all(name[len(prefix):].split(delimiter)):
                self.errors.append(f"{name}: malformed override (use ORCH_SECTION__KEY)")
                continue
            kept[name.lower()] = value  # the rest in any case: ORCH_API__PORT is api.port
        return kept

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        """A list or mapping is YAML (``[a, b]``, ``{k: v}``, so also JSON); anything else, and YAML that does
        not parse, stays a string for validation to judge at its key path."""
        if isinstance(value, str) and value[:1] in ("[", "{"):
            import yaml

            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
        return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix, delimiter = self.env_prefix.lower(), self.env_nested_delimiter or ""
        for name, value in self.env_vars.items():
            if name.startswith(prefix) and delimiter in name:
                section, *keys = name[len(prefix):].split(delimiter)
                if section not in self.settings_cls.model_fields:
                    set_path(data, [section, *keys], value)
        return data


class GuideNamesSource(InitSettingsSource):
    """The guide's and Prefect's variable names (:data:`ENV_ALIASES`) at their key paths; empty means unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        data: dict[str, Any] = {}
        for name, key_path in ENV_ALIASES:
            if environ.get(name):
                set_path(data, key_path.split("."), environ[name])
        super().__init__(settings_cls, init_kwargs=data)


class InterpolatedYamlSource(YamlConfigSettingsSource):
    """The YAML file, with ``${VAR}``, ``${VAR:-default}`` and ``$$`` replaced from the environment.

    An unreadable file raises :class:`ConfigError` naming it (missing, not YAML with line and column, not a
    mapping); an unset ``${VAR}`` without a default is kept in :attr:`errors` at its key path.
    """

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.errors: list[str] = []
        if not yaml_file.is_file():  # pydantic-settings skips a missing file; a file that was named must exist
            raise ConfigError([f"config file not found: {yaml_file}"], str(yaml_file))
        super().__init__(settings_cls, yaml_file=yaml_file)

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        import yaml

        try:
            loaded = yaml.safe_load(file_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{where}invalid YAML: {problem}"], str(file_path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"cannot read config file: {exc}"], str(file_path)) from None
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(["the top level must be a mapping of sections"], str(file_path))
        return interpolate(loaded, self._environ, "", self.errors)


def interpolate(value: Any, environ: Mapping[str, str], path: str, errors: list[str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    ``$$`` is a literal ``$``. An unset ``${VAR}`` without a default is an error at its key path: a
    missing variable must not become an empty password or URL without anyone noticing.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, environ, f"{path}.{k}" if path else str(k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found not in (None, ""):
            return found
        if default is not None:
            return default
        errors.append(
            f"{path}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-}} to make it optional)"
        )
        return ""

    return _VAR_RE.sub(replace, value)


def set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Put ``value`` at ``parts`` in a tree of dicts, making (or replacing by) dicts on the way."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
