"""orch.logging_config, orch.log_handlers and orch.redaction through real handlers, real files and real environment
variables."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orch.config.schema import LoggingSettings
from orch.log_handlers import RedactingFilter
from orch.logging_config import (
    LEVEL_ENV_VARS,
    PROJECT_LOGGERS,
    _in_pytest,
    configure_logging,
    get_logger,
    in_pytest,
    reset_logging,
)
from orch.redaction import (
    _BEARER,
    _JWT,
    _KEY_VALUE,
    _URL_CREDENTIALS,
    _apply_patterns,
    redact,
    redact_records,
    redact_structure,
    register_secret,
)

PREFECT_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs")


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts unconfigured with no level variables, and leaves no handlers or open files."""
    for var in LEVEL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    reset_logging()
    yield
    reset_logging()


def leave_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the real pytest detection say "not a test run", to check production behaviour.

    Called in the test body, not a fixture: pytest sets PYTEST_CURRENT_TEST again for the call phase.
    """
    monkeypatch.delitem(sys.modules, "pytest")
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)


def make_settings(tmp_path: Path, **overrides: Any) -> LoggingSettings:
    return LoggingSettings(**{"file": str(tmp_path / "logs" / "orch.log"), **overrides})


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def json_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """Configure JSON logging into a real file at INFO; return a reader for the records written so far."""
    monkeypatch.setenv("ORCH_LOG_LEVEL", "INFO")
    settings = make_settings(tmp_path, format="json")
    configure_logging(settings, force=True, allow_file_in_pytest=True)
    return lambda: read_json_lines(Path(settings.file))


def secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


# --- JSON file output and rotation ----------------------------------------------------------------------


def test_json_lines_carry_extra_fields_at_top_level(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    get_logger("orch.api").info(
        "request %s done", "GET /tasks",
        extra={"event_type": "http_request", "duration_ms": 12.5, "endpoint": "/tasks", "task_id": "t-1"},
    )

    [record] = json_log()
    assert record["message"] == "request GET /tasks done"
    assert record["level"] == "INFO"
    assert record["logger"] == "orch.api"
    assert record["event_type"] == "http_request"
    assert record["duration_ms"] == 12.5
    assert record["endpoint"] == "/tasks"
    assert record["task_id"] == "t-1"
    timestamp = datetime.fromisoformat(record["timestamp"])
    assert timestamp.utcoffset() == timedelta(0)


def test_text_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOG_LEVEL", "INFO")
    settings = make_settings(tmp_path, format="text")
    configure_logging(settings, allow_file_in_pytest=True)

    get_logger("flows.backup").info("backup finished")

    line = Path(settings.file).read_text(encoding="utf-8")
    assert line.endswith(" [INFO] flows.backup: backup finished\n")
    datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_file_rotates_at_max_size(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, format="text", max_size=300, backup_count=3)
    configure_logging(settings, allow_file_in_pytest=True)
    logger = get_logger("tasks.rotation")

    for number in range(100):
        logger.warning("line %03d", number)

    log_dir = Path(settings.file).parent
    backups = sorted(log_dir.glob("orch.log.*"))
    assert (log_dir / "orch.log.1").exists()
    assert 1 <= len(backups) <= settings.backup_count
    assert all(path.stat().st_size <= settings.max_size for path in [*backups, Path(settings.file)])
    assert "line 099" in Path(settings.file).read_text(encoding="utf-8")


def test_rotation_counts_what_the_file_already_held(tmp_path: Path) -> None:
    """A restarted process appends to the existing file; its size counts toward max_size."""
    settings = make_settings(tmp_path, format="text", max_size=300, backup_count=2)
    log_file = Path(settings.file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("x" * 249 + "\n", encoding="utf-8")
    configure_logging(settings, allow_file_in_pytest=True)
    get_logger("tasks.rotation").warning("a line that no longer fits in the first file")
    assert (log_file.parent / "orch.log.1").read_text(encoding="utf-8") == "x" * 249 + "\n"
    assert "no longer fits" in log_file.read_text(encoding="utf-8")


def test_log_file_parent_directory_is_created(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, file=str(tmp_path / "a" / "b" / "orch.log"))
    configure_logging(settings, allow_file_in_pytest=True)
    get_logger("orch").warning("hello")
    assert (tmp_path / "a" / "b" / "orch.log").is_file()


# --- redaction ------------------------------------------------------------------------------------------


def test_url_password_is_masked(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    get_logger("orch.db").info("connecting to %s", "postgresql+psycopg2://orch:pa55w0rd!@db:5432/orch")
    [record] = json_log()
    assert record["message"] == "connecting to postgresql+psycopg2://orch:***@db:5432/orch"


def test_bearer_token_is_masked(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    get_logger("orch.api").info("upstream sent Bearer abc.DEF-123_xyz~+/= back")
    [record] = json_log()
    assert record["message"] == "upstream sent Bearer *** back"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("login failed password=hunter2hunter2 user=bob", "login failed password=*** user=bob"),
        ("db_passwd: letmein99, retrying", "db_passwd: ***, retrying"),
        ('payload {"client_secret": "abc 123", "id": 7}', 'payload {"client_secret": "***", "id": 7}'),
        ("config {'api_key': 'k-123456'}", "config {'api_key': '***'}"),
        ("GET /hook?access_token=tok123&page=2", "GET /hook?access_token=***&page=2"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ***"),
        ("X-Api-Key=abcdef0123", "X-Api-Key=***"),
        ('broken {"token": "abc def', 'broken {"token": "***"'),
    ],
)
def test_key_value_secrets_are_masked(
    json_log: Callable[[], list[dict[str, Any]]], message: str, expected: str
) -> None:
    get_logger("orch").info(message)
    [record] = json_log()
    assert record["message"] == expected


def test_sensitive_extra_keys_are_masked(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    get_logger("orch.security").info(
        "user created",
        extra={"password": "hunter2", "Session-Cookie": "c=1", "refresh_token": "r", "user": "bob",
               "attempts": 3},
    )
    [record] = json_log()
    assert record["password"] == record["Session-Cookie"] == record["refresh_token"] == "***"
    assert record["user"] == "bob"
    assert record["attempts"] == 3


def test_nested_extra_values_are_masked(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    get_logger("orch.api").info(
        "webhook received",
        extra={"request": {
            "headers": {"Authorization": "Bearer abc", "Accept": "application/json"},
            "items": [{"db_password": "pw", "name": "first"}, "redis://:hunter22@cache:6379/0"],
        }},
    )
    [record] = json_log()
    assert record["request"] == {
        "headers": {"Authorization": "***", "Accept": "application/json"},
        "items": [{"db_password": "***", "name": "first"}, "redis://:***@cache:6379/0"],
    }


def test_objects_and_deep_values_in_extras_are_masked(
    json_log: Callable[[], list[dict[str, Any]]],
) -> None:
    deep: dict[str, Any] = {"url": "amqp://orch:rabbitpw1@mq//"}
    for _ in range(20):
        deep = {"level": deep}
    error = OSError("cannot open sqlite:///x?password=pw9876")
    get_logger("orch").info("failed", extra={"error": error, "deep": deep, "path": Path("/tmp")})
    [record] = json_log()
    assert record["error"] == "cannot open sqlite:///x?password=***"
    assert "rabbitpw1" not in json.dumps(record["deep"])
    assert record["path"] == "/tmp"


def test_registered_secret_is_masked_everywhere(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    webhook_secret = secret()
    register_secret(webhook_secret)
    register_secret("short")  # too short to register: masking it would mangle ordinary words

    get_logger("orch.webhooks").info(
        "signing with %s (short)", webhook_secret, extra={"note": f"prefix-{webhook_secret}-suffix"}
    )

    [record] = json_log()
    assert record["message"] == "signing with *** (short)"
    assert record["note"] == "prefix-***-suffix"


def test_jwt_is_masked(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    get_logger("orch.security").info("issued %s to bob", jwt, extra={"issued": [jwt]})
    [record] = json_log()
    assert record["message"] == "issued *** to bob"
    assert record["issued"] == ["***"]


def test_exception_text_is_masked_in_json(json_log: Callable[[], list[dict[str, Any]]]) -> None:
    try:
        raise ConnectionError("cannot reach postgresql://orch:topsecret1@db/orch")
    except ConnectionError:
        get_logger("orch.db").exception("database unavailable")

    [record] = json_log()
    assert "ConnectionError: cannot reach postgresql://orch:***@db/orch" in record["exc_info"]
    assert "topsecret1" not in json.dumps(record)


def test_exception_text_is_masked_in_text_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = secret()
    register_secret(token)
    configure_logging(make_settings(tmp_path, format="text"))
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        get_logger("orch").error("request failed", exc_info=True)

    err = capsys.readouterr().err
    assert "[ERROR] orch: request failed" in err
    assert "ValueError: bad token ***" in err
    assert token not in err


def test_non_string_messages_and_bad_args_do_not_crash(
    json_log: Callable[[], list[dict[str, Any]]],
) -> None:
    logger = get_logger("orch")
    logger.info(12345)
    logger.info({"token": "t0k3n", "n": 1})
    logger.info("%d items", "not a number")

    messages = [record["message"] for record in json_log()]
    assert messages[0] == "12345"
    assert messages[1] == "{'token': '***', 'n': 1}"
    assert messages[2].startswith("'%d items'")


def test_redaction_patterns_cannot_rescan_a_blob() -> None:
    """Unanchored patterns rescan a blob from every position; 100 KB of base64 once took minutes.

    Checked by the shape that prevents it rather than by a stopwatch (which fails on a loaded machine and
    passes a quadratic pattern on a fast one): every pattern opens with a start-of-word guard, so an
    attempt from inside a word fails at its first step and a blob that is one long word is tried from one
    position; and after ``://`` the URL pattern only has capped repeats, so an attempt there scans at most
    a few hundred characters. How long a blob takes to redact is the benchmarks' business, not a unit
    test's; were a quadratic pattern to slip past this, the blobs below would run into pytest's timeout.
    """
    for pattern in (_URL_CREDENTIALS, _JWT, _BEARER, _KEY_VALUE):
        assert pattern.pattern.startswith(("(?<!", r"\b")), f"not anchored to a word start: {pattern.pattern}"
    after_scheme = re.sub(r"\[[^\]]*\]", "", _URL_CREDENTIALS.pattern.split("://", 1)[1])  # classes dropped
    assert not re.search(r"[*+]", after_scheme), f"unbounded repeat after '://': {_URL_CREDENTIALS.pattern}"

    # Correct on large blobs, and a secret after one is still found.
    for blob in ("A" * 100_000, "a://b:" * 20_000, "passwordpassword" * 6_000, "eyJ" * 30_000):
        assert redact(blob) == blob
        assert redact(f"{blob} token=abc") == f"{blob} token=***"


FAST_PATH_SAMPLES = (
    "GET /health 200", "plain text with no secrets", "x://a:b@c",
    "postgresql://orch:hunter2@db:5432/orch",  # pragma: allowlist secret
    "Authorization: Bearer abc.def-ghi", "BEARER abc", "bearer", "eyJhbGciOi.eyJzdWIi.c2ln", "eyJ", "token=abc",
    "API-KEY: abc", "apikey=abc", "Api_Key = 'abc'", "private-key: x", "PrivateKey=x", "passwd:x", "pass_wd=x",
    "secret", "my_secret_value", '{"password": "p", "user": "u"}', "cookie=a;b", "credentials: x y",
    "signature=v1,t=1", "tokens", "key=value", "a=b:c", "the password is long", "sign-ature=x",
    "Password=ünïcode", "paſſword=x", "\u212a=x", "apı_key=x", "résumé: token=abc",
)


@pytest.mark.parametrize("text", FAST_PATH_SAMPLES)
def test_redact_fast_path_matches_every_pattern(text: str) -> None:
    """redact() skips a pattern when the text cannot match it; the answer must be what all patterns give."""
    assert redact(text) == _apply_patterns(text)


def test_redact_structure_is_the_one_rule_for_data() -> None:
    """API responses and SSE mask task data with this; it must mask what logs mask, keys included, keep
    JSON's shape (also deeper than log extras are recursed) and leave already masked data as it is."""
    register_secret("registered-secret-value-0001")
    deep: Any = {"password": "deep-pw-0002", "n": 1}
    for _ in range(30):
        deep = {"level": [deep]}
    data = {
        "dsn": "postgresql://orch:dsn-pw-0003@db/orch", "credentials": {"user": "u"}, "count": 3, "ok": None,
        "note": 'retry with password: "quoted pw 0004"', "postgresql://orch:key-pw-0005@db/orch": 1,
        "list": ["Bearer abc.def", "registered-secret-value-0001", 2.5], "deep": deep,
    }
    masked = redact_structure(data)
    text = json.dumps(masked)
    assert not [s for s in ("pw-000", "pw 0004", "abc.def", "registered-secret") if s in text], text
    assert masked["dsn"] == "postgresql://orch:***@db/orch" and masked["credentials"] == "***"
    assert (masked["count"], masked["ok"], masked["list"][2]) == (3, None, 2.5)
    assert masked["note"] == 'retry with password: "***"'
    assert masked["postgresql://orch:***@db/orch"] == 1
    inner = masked["deep"]
    for _ in range(30):
        inner = inner["level"][0]
    assert inner == {"password": "***", "n": 1}  # still a dict 61 levels down: the shape is kept
    assert redact_structure(masked) == masked
    assert data["dsn"].endswith("dsn-pw-0003@db/orch")  # the input is not changed


def test_redact_records_masks_the_named_fields_and_is_not_masked_twice() -> None:
    """A batch's creation records: the fields a caller wrote freely are masked by the one rule, the ids and
    numbers ORCH made or validated are kept as they are, and a structure holding the records (the audit
    trail's line) takes them as they are instead of masking them again."""
    params = {"password": "pw-0006", "url": "https://u:pw-0007@h/"}  # pragma: allowlist secret
    records = [{"task_id": "t-1", "timeout": 30, "params": params, "locks": ["db:registered-secret-value-0001"],
                "metadata": None}]
    register_secret("registered-secret-value-0001")
    masked = redact_records(records, ("params", "locks", "metadata"))
    assert masked == [{"task_id": "t-1", "timeout": 30, "params": {"password": "***", "url": "https://u:***@h/"},
                       "locks": ["db:***"], "metadata": None}]
    assert records[0]["params"] == params and params["password"].endswith("0006")  # the input is not changed
    holder = {"tasks": masked, "token": "tok-0008"}
    again = redact_structure(holder)
    assert again["tasks"] is masked and again["token"] == "***"
    assert redact_structure({"tasks": list(masked)})["tasks"] is not masked  # a plain list is masked as usual


def test_filter_is_idempotent_on_one_record() -> None:
    """A record reaches several handlers; filtering it twice must not damage it."""
    record = logging.LogRecord("orch", logging.INFO, __file__, 1, "pw %s", ("password=abc",), None)
    redacting = RedactingFilter()
    assert redacting.filter(record) and redacting.filter(record)
    assert record.getMessage() == "pw password=***"


# --- levels -----------------------------------------------------------------------------------------------


def test_level_precedence_orch_log_level_then_log_level_then_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leave_pytest(monkeypatch)
    settings = LoggingSettings(level="ERROR", file=None)
    orch = logging.getLogger("orch")

    configure_logging(settings, force=True)
    assert orch.level == logging.ERROR

    monkeypatch.setenv("LOG_LEVEL", "info")
    configure_logging(settings, force=True)
    assert orch.level == logging.INFO

    monkeypatch.setenv("ORCH_LOG_LEVEL", "DEBUG")
    configure_logging(settings, force=True)
    assert orch.level == logging.DEBUG


def test_invalid_level_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging(LoggingSettings(file=None))


def test_per_module_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings(tmp_path, loggers={"orch.api": "DEBUG", "uvicorn": "ERROR"}))

    assert logging.getLogger("orch.api").level == logging.DEBUG
    assert logging.getLogger("uvicorn").level == logging.ERROR
    assert logging.getLogger("uvicorn.access").getEffectiveLevel() == logging.ERROR

    get_logger("orch.api").debug("api detail")
    get_logger("orch.other").debug("other detail")
    get_logger("uvicorn.access").warning("access warning")
    err = capsys.readouterr().err
    assert "api detail" in err
    assert "other detail" not in err
    assert "access warning" not in err


def test_under_pytest_no_file_and_warning_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert in_pytest() and _in_pytest()
    settings = make_settings(tmp_path, level="DEBUG", format="text")
    configure_logging(settings)

    get_logger("orch").info("not shown")
    get_logger("orch").warning("shown")

    assert logging.getLogger("orch").level == logging.WARNING
    assert not Path(settings.file).exists()
    assert not Path(settings.file).parent.exists()
    err = capsys.readouterr().err
    assert "shown" in err and "not shown" not in err


def test_outside_pytest_settings_level_and_file_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leave_pytest(monkeypatch)
    assert not in_pytest()
    settings = make_settings(tmp_path, level="DEBUG")
    configure_logging(settings)

    get_logger("blocks.storage").debug("debug line")

    assert logging.getLogger("blocks").level == logging.DEBUG
    [record] = read_json_lines(Path(settings.file))
    assert record["message"] == "debug line"


def test_with_a_file_stderr_gets_console_level_and_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API writes the file; its stderr (journal, orch up's api.log) must not repeat every line."""
    leave_pytest(monkeypatch)
    settings = make_settings(tmp_path, level="INFO")
    configure_logging(settings)
    get_logger("orch.api.access").info("GET /health 200")
    get_logger("orch.api").warning("database slow")
    err = capsys.readouterr().err
    assert "database slow" in err and "GET /health" not in err
    assert [r["message"] for r in read_json_lines(Path(settings.file))] == ["GET /health 200", "database slow"]

    configure_logging(make_settings(tmp_path, level="INFO", console_level="INFO"), force=True)
    get_logger("orch.api.access").info("GET /healthz 200")
    assert "GET /healthz" in capsys.readouterr().err


# --- ownership, Prefect and idempotency ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Logger 'prefect.flow_runs' attempted to send logs")
def test_prefect_and_root_loggers_are_left_alone(tmp_path: Path) -> None:
    watched = ("", *PREFECT_LOGGERS)
    before = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                     logging.getLogger(name).level) for name in watched}

    configure_logging(make_settings(tmp_path), allow_file_in_pytest=True)
    logging.getLogger("prefect.flow_runs").warning("a prefect run line")

    after = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in watched}
    assert after == before
    assert not (tmp_path / "logs" / "orch.log").read_text(encoding="utf-8")


def test_project_loggers_do_not_propagate(tmp_path: Path) -> None:
    configure_logging(make_settings(tmp_path))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        assert logger.propagate is False
        assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in logger.handlers)


def test_configure_twice_installs_one_handler_set(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, format="json")
    configure_logging(settings, allow_file_in_pytest=True)
    first = list(logging.getLogger("orch").handlers)
    configure_logging(make_settings(tmp_path, format="text"), allow_file_in_pytest=True)

    assert len(first) == 2  # stderr + rotating file
    for name in PROJECT_LOGGERS:
        assert logging.getLogger(name).handlers == first

    configure_logging(settings, force=True, allow_file_in_pytest=True)
    replaced = logging.getLogger("orch").handlers
    assert len(replaced) == 2 and not set(replaced) & set(first)


def test_foreign_handler_on_owned_logger_is_replaced_then_restored(tmp_path: Path) -> None:
    """Prefect's logging.yml gives "uvicorn" a console handler; keeping it would print lines twice."""
    uvicorn = logging.getLogger("uvicorn")
    foreign = logging.NullHandler()
    uvicorn.addHandler(foreign)
    before = (list(uvicorn.handlers), uvicorn.propagate)  # Prefect, once imported, adds its own too
    try:
        configure_logging(make_settings(tmp_path))
        assert foreign not in uvicorn.handlers and len(uvicorn.handlers) == 1

        reset_logging()
        assert (uvicorn.handlers, uvicorn.propagate) == before
    finally:
        uvicorn.removeHandler(foreign)


def test_get_logger_returns_the_standard_logger() -> None:
    assert get_logger("orch.cli") is logging.getLogger("orch.cli")


def test_import_is_cheap() -> None:
    heavy = ("pydantic", "prefect", "pythonjsonlogger", "logging.handlers")
    code = f"import sys, orch.logging_config; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
