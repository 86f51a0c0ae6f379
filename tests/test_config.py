"""The configuration loader: every bad input named by key path, every source in its place."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from support import run_orch

from orch.config.loader import ConfigError, load_settings
from orch.config.schema import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "production.yaml.example"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path | None = None, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, generate_secrets=False, **kwargs)  # type: ignore[arg-type]
    return caught.value.errors


def test_zero_config_defaults_run_locally(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # the session's Prefect server exports it
    settings = load_settings(generate_secrets=False)
    assert settings.environment == "local"
    assert settings.database.url == f"sqlite:///{isolated_env / 'data' / 'orch.db'}"
    assert settings.logging.file == str(isolated_env / "logs" / "orch-next.log")
    assert settings.logging.max_size == 100 * 1024**2 and settings.logging.backup_count == 10
    assert settings.security.rate_limit.requests_per_minute == 100
    assert settings.monitoring.self_healing.actions == ["restart", "isolate", "rollback"]
    assert settings.features.task_timeout_default == 300
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8000)
    assert settings.prefect.resolved_api_url() == "http://127.0.0.1:4200/api"


def test_every_error_is_listed_with_its_key_path(isolated_env: Path) -> None:
    config = write(isolated_env / "bad.yaml", """
security:
  rate_limit:
    requests_per_minute: 0
  rate_limt: 3
database:
  pool_size: ten
  url: mysql://x/y
monitoring:
  alert_thresholds:
    cpu_percent: 150
  self_healing:
    actions: [restart, reboot]
logging:
  level: verbose
  max_size: lots
notifications:
  email:
    to_addresses: [not-an-address]
featurs: {}
""")
    errors = errors_of(config)
    expected = {
        "security.rate_limit.requests_per_minute: must be greater than 0",
        "security.rate_limt: unknown key (did you mean rate_limit?)",
        "database.pool_size: must be a valid integer",
        "database.url: must be a sqlite:// or postgresql:// URL",
        "monitoring.alert_thresholds.cpu_percent: must be less than or equal to 100",
        "monitoring.self_healing.actions.1: must be 'restart', 'isolate' or 'rollback'",
        "logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "logging.max_size: must be a size such as 100MB",
        "notifications.email.to_addresses: must be e-mail addresses",
        "featurs: unknown key (did you mean features?)",
    }
    for prefix in expected:
        assert any(line.startswith(prefix) for line in errors), (prefix, errors)
    assert len(errors) == len(expected)


def test_interpolation_default_escape_and_unset(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_CHANNEL", "#ops")
    config = write(isolated_env / "c.yaml", """
notifications:
  slack:
    channel: "${ORCH_TEST_CHANNEL}"
    username: "${ORCH_TEST_UNSET:-ORCH bot}"
    webhook_url: "${ORCH_TEST_UNSET:-}"
  email:
    from_address: "cost$$center@example.com"
""")
    settings = load_settings(config, generate_secrets=False)
    assert settings.notifications.slack.channel == "#ops"
    assert settings.notifications.slack.username == "ORCH bot"
    assert settings.notifications.slack.webhook_url is None  # ${VAR:-} means "not configured"
    assert settings.notifications.email.from_address == "cost$center@example.com"

    write(config, 'security:\n  jwt_secret: "${ORCH_TEST_UNSET}"\n')
    assert errors_of(config) == [
        "security.jwt_secret: environment variable ORCH_TEST_UNSET is not set "
        "(set it, or write ${ORCH_TEST_UNSET:-} to make it optional)"]


def test_dotenv_file_feeds_interpolation_and_environment_wins(isolated_env: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated_env / ".env", "ORCH_TEST_PORT=9100\nJWT_SECRET=from-dotenv-0123456789\nORCH_PORT=9200\n")
    config = write(isolated_env / "c.yaml", "api:\n  port: ${ORCH_TEST_PORT}\n")
    settings = load_settings(config, generate_secrets=False)
    assert settings.security.jwt_secret.get_secret_value() == "from-dotenv-0123456789"
    assert settings.api.port == 9200  # ORCH_PORT from .env overrides the file
    monkeypatch.setenv("ORCH_PORT", "9300")
    assert load_settings(config, generate_secrets=False).api.port == 9300  # process env beats .env


def test_config_path_from_environment_and_precedence(isolated_env: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated_env / "orch.yaml", "logging:\n  level: DEBUG\nsecurity:\n  jwt_expiry: 60\n")
    monkeypatch.setenv("ORCH_CONFIG_PATH", "orch.yaml")  # relative to ORCH_HOME
    assert load_settings(generate_secrets=False).logging.level == "DEBUG"
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    assert load_settings(generate_secrets=False).logging.level == "ERROR"
    monkeypatch.setenv("ORCH_LOG_LEVEL", "warning")
    assert load_settings(generate_secrets=False).logging.level == "WARNING"
    monkeypatch.setenv("ORCH_SECURITY__JWT_EXPIRY", "120")
    monkeypatch.setenv("ORCH_API__CORS_ORIGINS", "[https://ops.example.com]")
    settings = load_settings(generate_secrets=False)
    assert settings.security.jwt_expiry == 120
    assert settings.api.cors_origins == ["https://ops.example.com"]


def test_environment_override_typos_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_SECURITY__RATE_LIMIT__REQUESTS_PER_MINUT", "5")
    monkeypatch.setenv("ORCH_FEATURES__MAX_CONCURRENT_TASKS", "-1")
    errors = errors_of()
    assert "security.rate_limit.requests_per_minut: unknown key (did you mean requests_per_minute?)" in errors
    assert any(e.startswith("features.max_concurrent_tasks: must be greater than 0") for e in errors)


def test_environment_override_naming_no_section_or_no_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_FEATURS__ENABLE_SSE", "false")
    monkeypatch.setenv("ORCH_API__", "1")
    monkeypatch.setenv("orch_api__port", "1")  # not ORCH_ in capitals: nobody's override, as before
    assert errors_of() == ["ORCH_API__: malformed override (use ORCH_SECTION__KEY)",
                           "featurs: unknown key (did you mean features?)"]


def test_one_environment_nested_names_beat_the_guides_wherever_set(isolated_env: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The .env file and the process are one environment under the process: ORCH_API__PORT from .env still
    beats ORCH_PORT from the process, as any ORCH_<SECTION>__<KEY> beats the guide's name for its key."""
    write(isolated_env / ".env", "ORCH_API__PORT=9100\nORCH_LOG_LEVEL=debug\n")
    monkeypatch.setenv("ORCH_PORT", "9200")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    settings = load_settings(generate_secrets=False)
    assert (settings.api.port, settings.logging.level) == (9100, "DEBUG")
    monkeypatch.setenv("ORCH_API__PORT", "9300")
    assert load_settings(generate_secrets=False).api.port == 9300


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_API__PORT", "9100")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    settings = Settings()
    assert (settings.api.port, settings.database.url) == (8000, None)
    assert load_settings(generate_secrets=False).api.port == 9100


GUIDE_VALUES: dict[str, tuple[str, object]] = {  # key path: (the variable's value, the setting it gives)
    "database.url": ("postgresql://orch@db/orch", "postgresql://orch@db/orch"),
    "security.jwt_secret": ("jwt-from-env-0123456789", "jwt-from-env-0123456789"),
    "security.webhook_secret": ("hook-from-env-0123456789", "hook-from-env-0123456789"),
    "security.mcp_token": ("mcp-from-env-0123456789", "mcp-from-env-0123456789"),
    "notifications.slack.webhook_url": ("https://hooks.slack.com/x", "https://hooks.slack.com/x"),
    "notifications.email.smtp_server": ("smtp.example.com", "smtp.example.com"),
    "notifications.email.smtp_port": ("465", 465),
    "notifications.email.username": ("mailer", "mailer"),
    "notifications.email.password": ("mail-password", "mail-password"),
    "logging.level": ("debug", "DEBUG"),
    "api.host": ("0.0.0.0", "0.0.0.0"),
    "api.port": ("9100", 9100),
    "api.forwarded_allow_ips": ("10.0.0.1, 10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
    "prefect.api_url": ("http://prefect:4200/api", "http://prefect:4200/api"),
    "prefect.server_host": ("0.0.0.0", "0.0.0.0"),
    "prefect.server_port": ("4300", 4300),
    "prefect.auth_string": ("orch:from-env-0123456789", "orch:from-env-0123456789"),
    "features.maintenance_mode": ("true", True),
}


def test_every_guide_name_sets_its_key(isolated_env: Path) -> None:
    from orch.config.sources import ENV_ALIASES

    assert set(GUIDE_VALUES) == {key_path for _, key_path in ENV_ALIASES}
    for name, key_path in ENV_ALIASES:
        given, expected = GUIDE_VALUES[key_path]
        settings = load_settings(environ={"ORCH_HOME": str(isolated_env), name: given}, generate_secrets=False)
        found: object = settings
        for part in key_path.split("."):
            found = getattr(found, part)
        value = found.get_secret_value() if isinstance(found, SecretStr) else found
        assert value == expected, (name, value)


def test_environment_list_that_is_no_yaml_is_judged_at_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_API__CORS_ORIGINS", "[https://ops.example.com")
    assert errors_of() == ["api.cors_origins: must be a valid list (got '[https://ops.example.com')"]


@pytest.mark.parametrize("text, message", [
    ("security:\n\tjwt_expiry: 60\n", "line 2, column 1: invalid YAML: found character '\\t'"),
    ("- just\n- a list\n", "the top level must be a mapping of sections"),
    (b"security: \xff\n", "cannot read config file: 'utf-8' codec can't decode byte 0xff"),
])
def test_unreadable_files(isolated_env: Path, text: str | bytes, message: str) -> None:
    config = isolated_env / "c.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    errors = errors_of(config)
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_missing_file_is_named(isolated_env: Path) -> None:
    assert errors_of(isolated_env / "nope.yaml") == [f"config file not found: {isolated_env / 'nope.yaml'}"]


def test_empty_file_means_defaults(isolated_env: Path) -> None:
    assert load_settings(write(isolated_env / "c.yaml", ""), generate_secrets=False).api.port == 8000


def test_production_requires_secrets() -> None:
    errors = errors_of(environ={"ORCH_ENVIRONMENT": "production"})
    assert errors == [
        "security.jwt_secret: required when environment is production (set JWT_SECRET)",
        "security.webhook_secret: required when environment is production (set WEBHOOK_SECRET)",
        "prefect.auth_string: required when environment is production "
        "(set PREFECT_API_AUTH_STRING, the server's PREFECT_SERVER_API_AUTH_STRING)",
    ]


def test_short_secret_rejected_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "hunter2")
    errors = errors_of()
    assert errors == ["security.jwt_secret: must be at least 16 characters"]
    assert "hunter2" not in " ".join(errors)


def test_local_secrets_generated_once_private_and_stable(isolated_env: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):  # the session's Prefect server exports them
        monkeypatch.delenv(name, raising=False)
    first = load_settings()
    secrets_file = isolated_env / "data" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stored = json.loads(secrets_file.read_text())
    assert set(stored) == {"jwt_secret", "webhook_secret", "mcp_token", "prefect_auth_string"}
    assert load_settings().prefect.auth_string.get_secret_value() == stored.pop("prefect_auth_string")  # type: ignore[union-attr]
    second = load_settings()
    for name in stored:
        value = getattr(first.security, name).get_secret_value()
        assert len(value) >= 32
        assert getattr(second.security, name).get_secret_value() == value == stored[name]
    assert stored["jwt_secret"] not in repr(first) and stored["jwt_secret"] not in str(first.model_dump())


def test_given_secret_is_not_replaced_and_validation_writes_nothing(isolated_env: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    load_settings(generate_secrets=False)
    assert not (isolated_env / "data").exists()
    monkeypatch.setenv("JWT_SECRET", "operator-chosen-secret-value")
    settings = load_settings()
    assert settings.security.jwt_secret.get_secret_value() == "operator-chosen-secret-value"
    assert "jwt_secret" not in json.loads((isolated_env / "data" / "secrets.json").read_text())


def test_paths_resolve_against_orch_home(isolated_env: Path) -> None:
    config = write(isolated_env / "c.yaml", "data_dir: var/orch\ndatabase:\n  path: db/guide.db\n"
                                            "logging:\n  file: ''\n")
    settings = load_settings(config, generate_secrets=False)
    assert settings.data_dir == str(isolated_env / "var" / "orch")
    assert settings.database.url == f"sqlite:///{isolated_env / 'db' / 'guide.db'}"
    assert settings.logging.file is None
    write(config, "database:\n  url: sqlite:///rel/x.db\n")
    assert load_settings(config, generate_secrets=False).database.url == f"sqlite:///{isolated_env / 'rel/x.db'}"


def _leaf_paths(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        paths: set[str] = set()
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths |= _leaf_paths(value, path) if isinstance(value, dict) and key != "loggers" else {path}
        return paths
    return {prefix}


def test_example_documents_every_key_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    documented = _leaf_paths(yaml.safe_load(EXAMPLE.read_text()))
    defaults = _leaf_paths(Settings().model_dump())
    assert defaults - documented == set(), "keys missing from config/production.yaml.example"
    assert documented - defaults == set(), "example documents keys that do not exist"
    monkeypatch.setenv("JWT_SECRET", "example-jwt-secret-0123456789")
    monkeypatch.setenv("WEBHOOK_SECRET", "example-webhook-secret-0123456789")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "orch:example-prefect-0123456789")
    settings = load_settings(EXAMPLE, generate_secrets=False)
    assert settings.environment == "production"
    assert settings.database.url.startswith("postgresql://orch:change-me@")


def test_cli_validate_exit_codes_and_output(isolated_env: Path) -> None:
    good = write(isolated_env / "good.yaml", "security:\n  jwt_expiry: 60\n")
    result = run_orch("config", "validate", str(good))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout

    bad = write(isolated_env / "bad.yaml", "security:\n  rate_limit:\n    requests_per_minute: 0\n"
                                           "logging:\n  level: loud\n")
    result = run_orch("config", "validate", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}: 2 error(s)",
        "  security.rate_limit.requests_per_minute: must be greater than 0 (got 0)",
        "  logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
    ]
    assert "Traceback" not in result.stderr

    result = run_orch("config", "validate", env={"ORCH_CONFIG_PATH": str(bad)})
    assert result.returncode == 1 and "2 error(s)" in result.stderr


def test_infra_env_example_feeds_the_production_example(isolated_env: Path) -> None:
    """The secrets file an operator installs beside config.yaml is read through ORCH_ENV_FILE."""
    example = (EXAMPLE.parents[1] / "infra" / "orch-next.env.example").read_text()
    filled = (example.replace("JWT_SECRET=\n", "JWT_SECRET=jwt-from-env-file-0123456789\n")
              .replace("WEBHOOK_SECRET=\n", "WEBHOOK_SECRET=hook-from-env-file-0123456789\n")
              .replace("PREFECT_API_AUTH_STRING=\n", "PREFECT_API_AUTH_STRING=orch:from-env-file-0123456789\n")
              .replace("ORCH_CONFIG_PATH=/etc/orch-next/config.yaml", f"ORCH_CONFIG_PATH={EXAMPLE}"))
    env_file = write(isolated_env / "orch-next.env", filled)
    import os

    settings = load_settings(environ={**os.environ, "ORCH_ENV_FILE": str(env_file)}, generate_secrets=False)
    assert settings.environment == "production"
    assert settings.security.jwt_secret.get_secret_value() == "jwt-from-env-file-0123456789"
    assert settings.database.url == "postgresql://orch:CHANGE_ME@127.0.0.1:5432/orch_next"
    assert settings.notifications.slack.webhook_url is None


def test_the_rate_limit_store_url_never_shows_its_password(isolated_env: Path) -> None:
    """A mistyped scheme is named without echoing the URL (which carries the store's password), and a
    valid URL's password is masked in logs like the database's."""
    errors = errors_of(environ={"ORCH_SECURITY__RATE_LIMIT__STORAGE_URL": "http://:hunter2-store@cache:6379/0"})
    assert errors == ["security.rate_limit.storage_url: must be a redis://, rediss:// or memory:// URL"]
    settings = load_settings(environ={"ORCH_SECURITY__RATE_LIMIT__STORAGE_URL": "redis://:s3cret%2Fpw@cache:6379/0"},
                             generate_secrets=False)
    assert "s3cret/pw" in settings.secret_values()
