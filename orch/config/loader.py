"""The one configuration loader: defaults < YAML file < environment, validated as a whole.

Why layered by hand instead of pydantic-settings' env source: the guide's configuration mixes its own
variable names (``DATABASE_URL``, ``JWT_SECRET``, ``LOG_LEVEL``, ``PREFECT_API_URL`` ...) with nested keys,
and an operator must get *every* mistake at once, each with its key path. So the layers are built here as
plain dicts, then validated once by :class:`~orch.config.schema.Settings`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orch.config.errors import ConfigError
from orch.config.local_secrets import fill_local_secrets
from orch.config.schema import Settings

CONFIG_PATH_ENV = "ORCH_CONFIG_PATH"
HOME_ENV = "ORCH_HOME"
ENV_FILE_ENV = "ORCH_ENV_FILE"
NESTED_PREFIX = "ORCH_"
NESTED_DELIMITER = "__"

# Environment variables the guide (and Prefect) already name, mapped to their key paths.
# Later entries win when both are set (ORCH_LOG_LEVEL beats LOG_LEVEL).
ENV_ALIASES: tuple[tuple[str, str], ...] = (
    ("ORCH_ENVIRONMENT", "environment"),
    ("ORCH_DATA_DIR", "data_dir"),
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


def project_home(environ: Mapping[str, str] | None = None) -> Path:
    """The directory relative paths resolve against: ``ORCH_HOME`` or the working directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(HOME_ENV) or os.getcwd()).resolve()


def read_environ(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the ``.env`` file (``ORCH_ENV_FILE`` or ``<home>/.env``)."""
    from dotenv import dotenv_values

    environ = dict(os.environ if environ is None else environ)
    env_file = Path(environ.get(ENV_FILE_ENV) or home / ".env")
    from_file: dict[str, str] = {}
    if env_file.is_file():
        try:
            from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        except OSError as exc:  # e.g. the secrets file is mode 0600 and owned by the service user
            raise ConfigError([f"cannot read {env_file}: {exc.strerror or exc}"]) from None
    return {**from_file, **environ}


def interpolate(value: Any, environ: Mapping[str, str], path: str, errors: list[str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    ``$$`` is a literal ``$``. An unset ``${VAR}`` without a default is an error at its key path: a
    missing variable must not become an empty password or URL without anyone noticing.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, environ, _join(path, str(k)), errors) for k, v in value.items()}
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


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    generate_secrets: bool = True,
) -> Settings:
    """Load, interpolate, override, validate and resolve the configuration.

    ``path`` beats ``ORCH_CONFIG_PATH``; with neither, the built-in defaults are the whole file.
    With ``generate_secrets`` (the runtime default) a local setup gets its missing secrets from
    ``<data_dir>/secrets.json``, created once with mode 0600. Raises :class:`ConfigError`.
    """
    home = project_home(environ)
    env = read_environ(home, environ)
    config_path = path or env.get(CONFIG_PATH_ENV)
    source = str(config_path) if config_path else None
    errors: list[str] = []

    data: dict[str, Any] = {}
    if config_path:
        data = _read_yaml(Path(config_path) if Path(config_path).is_absolute() else home / config_path)
        data = interpolate(data, env, "", errors)
    _apply_env_overrides(data, env, errors)

    settings: Settings | None = None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        already = {line.split(":", 1)[0] for line in errors}  # e.g. an unset ${VAR} said it first
        errors.extend(e for e in format_validation_errors(exc) if e.split(":", 1)[0] not in already)
    if settings is not None:
        errors.extend(_production_requirements(settings))
    if errors or settings is None:
        raise ConfigError(errors, source)

    _resolve_paths(settings, home)
    if generate_secrets and settings.environment == "local":
        fill_local_secrets(settings)
    return settings


def _read_yaml(file: Path) -> dict[str, Any]:
    import yaml

    if not file.is_file():
        raise ConfigError([f"config file not found: {file}"], str(file))
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read config file: {exc}"], str(file)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(["the top level must be a mapping of sections"], str(file))
    return loaded


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], errors: list[str]) -> None:
    """Environment beats the file: the guide's variable names, then ``ORCH_SECTION__KEY`` paths."""
    for name, key_path in ENV_ALIASES:
        if env.get(name):
            _set_path(data, key_path.split("."), env[name])
    for name, value in sorted(env.items()):
        if not name.startswith(NESTED_PREFIX) or NESTED_DELIMITER not in name or value == "":
            continue
        parts = [p.lower() for p in name[len(NESTED_PREFIX):].split(NESTED_DELIMITER)]
        if not all(parts):
            errors.append(f"{name}: malformed override (use ORCH_SECTION__KEY)")
            continue
        _set_path(data, parts, _parse_env_value(value))


def _parse_env_value(value: str) -> Any:
    """``[a, b]`` / ``{...}`` in an override are YAML, so lists can be set from the environment."""
    if value[:1] in "[{":
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SECRET_HINTS = ("secret", "password", "token", "webhook_url", "url")


def format_validation_errors(exc: ValidationError) -> list[str]:
    """One ``key.path: must ...`` line per pydantic error, with a suggestion for mistyped keys."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        key = ".".join(loc) or "(top level)"
        kind = error["type"]
        message = error["msg"]
        if kind == "extra_forbidden":
            message = "unknown key" + _suggest(Settings, loc)
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        elif message.startswith("Input should be "):
            message = "must be " + message[len("Input should be "):]
            if not any(hint in key for hint in _SECRET_HINTS) and "input" in error:
                message += f" (got {error['input']!r})"
        lines.append(f"{key}: {message}")
    return lines


def _suggest(model: type[BaseModel], loc: list[str]) -> str:
    """`` (did you mean X?)`` for an unknown key, from the field names valid at that place."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        current = field.annotation
    names = list(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _production_requirements(settings: Settings) -> list[str]:
    if settings.environment != "production":
        return []
    hints = {"jwt_secret": "JWT_SECRET", "webhook_secret": "WEBHOOK_SECRET"}
    missing = [
        f"security.{name}: required when environment is production (set {var})"
        for name, var in hints.items()
        if getattr(settings.security, name) is None
    ]
    if settings.prefect.auth_string is None:  # else Prefect's API, and every flow, is open to the network
        missing.append("prefect.auth_string: required when environment is production "
                       "(set PREFECT_API_AUTH_STRING, the server's PREFECT_SERVER_API_AUTH_STRING)")
    return missing


def _resolve_paths(settings: Settings, home: Path) -> None:
    """Make every path absolute against ``home`` so child processes agree on where data lives."""
    data_dir = _absolute(settings.data_dir, home)
    settings.data_dir = str(data_dir)
    db = settings.database
    if db.url is None:
        db.url = f"sqlite:///{_absolute(db.path, home) if db.path else data_dir / 'orch.db'}"
    elif db.url.startswith("sqlite:///") and not db.url.startswith("sqlite:////"):
        relative = db.url[len("sqlite:///"):]
        if relative and relative != ":memory:" and not relative.startswith("file:"):
            db.url = f"sqlite:///{_absolute(relative, home)}"
    if settings.logging.file:
        settings.logging.file = str(_absolute(settings.logging.file, home))
    if settings.logging.audit_file:
        settings.logging.audit_file = str(_absolute(settings.logging.audit_file, home))
    for key in ("tls_cert_file", "tls_key_file"):
        if getattr(settings.api, key):
            setattr(settings.api, key, str(_absolute(getattr(settings.api, key), home)))


def _absolute(path: str, home: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else home / candidate
