"""The one configuration loader: defaults < YAML file < environment, validated as a whole.

The layers are pydantic-settings sources (:mod:`orch.config.sources`); this module decides where they read
(``ORCH_HOME``, the ``.env`` file, the config file), reports *every* mistake at once, each with its key path,
and then applies what needs the validated settings: production's required secrets, absolute paths, and a
local setup's generated secrets (written only for a configuration that is valid, so they are no source).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orch.config.errors import ConfigError
from orch.config.local_secrets import fill_local_secrets
from orch.config.schema import Settings
from orch.config.sources import EnvironmentSource, GuideNamesSource, InterpolatedYamlSource

CONFIG_PATH_ENV = "ORCH_CONFIG_PATH"
HOME_ENV = "ORCH_HOME"
ENV_FILE_ENV = "ORCH_ENV_FILE"


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

    overrides = EnvironmentSource(Settings, env)
    file = None
    if config_path:
        file = InterpolatedYamlSource(Settings, home / config_path, env)  # an absolute path stays itself
    errors = [*(file.errors if file else []), *overrides.errors]
    sources = (overrides, GuideNamesSource(Settings, env), *([file] if file else []))

    settings: Settings | None = None
    try:
        settings = Settings(_build_sources=(sources, {}))
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
