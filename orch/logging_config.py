"""The project's one logger factory and logging setup.

Why a project namespace instead of the root logger: Prefect attaches its own handlers (console, API log
shipping) to the root and ``prefect.*`` loggers. Handlers on the root would print every Prefect line a
second time in our format, so ORCH-Next only ever configures the loggers it owns (:data:`PROJECT_LOGGERS`)
and stops them from propagating, which leaves Prefect's run logs exactly as Prefect renders them.

Why redaction lives here: every handler this module creates carries :class:`RedactingFilter`, so a token,
password or database URL that slips into a message, an ``extra=`` field or a traceback is masked at the
last point before it is written, whatever code produced it.

This module is imported by everything, so it imports nothing heavy (no pydantic, no Prefect).
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import re
import stat
import sys
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from orch.config.schema import LoggingSettings, Settings

PROJECT_LOGGERS: tuple[str, ...] = (
    "orch", "flows", "tasks", "blocks", "deployments", "uvicorn", "uvicorn.error", "uvicorn.access",
)
TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
MASK = "***"
LEVEL_ENV_VARS = ("ORCH_LOG_LEVEL", "LOG_LEVEL")  # first one set wins
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SENSITIVE = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "cookie",
              "credential", "private_key", "signature")
_MIN_SECRET_LENGTH = 8
_MAX_DEPTH = 8  # deeper (or self-referencing) extras are redacted as text instead of recursed into
DATA_DEPTH = 100  # JSON data (a tree, never self-referencing) is recursed this deep; API bodies are shallower

_KEY_HINTS = tuple(name.replace("_", "") for name in _SENSITIVE)  # what _KEY_NAMES can match, squashed
_KEY_NAMES = "|".join(name.replace("_", "[_-]?") for name in _SENSITIVE)
# Patterns start with a look-behind pinning them to the start of a word, and URL parts are length-capped:
# otherwise a long blob (base64, a compact JSON dump) is rescanned from every position, which is quadratic.
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]{0,256}:)[^\s@]{1,256}@"
)
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(?P<keep>bearer\s+)[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)
_KEY_VALUE = re.compile(
    rf"""(?<![\w.-])(?P<keep>["']?(?=[\w.-]*?(?:{_KEY_NAMES}))[\w.-]+["']?\s*[:=]\s*)"""
    # An unterminated quote masks to the end of the text rather than leak what follows it.
    r"""(?:(?:bearer|basic|token|digest)\s+)?(?P<value>"[^"]*"?|'[^']*'?|[^\s,;&"'}\])]+)""",
    re.IGNORECASE,
)
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_PLAIN = (bool, int, float, type(None), datetime.date, datetime.time, datetime.timedelta)

_redacted: weakref.WeakSet[logging.LogRecord] = weakref.WeakSet()  # records already masked
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_lock = threading.RLock()
_configured = False
_handlers: list[logging.Handler] = []
_saved: dict[str, tuple[int, bool, list[logging.Handler]]] = {}  # name -> level, propagate, handlers


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name``; the one call sites use, so output follows :func:`configure_logging`.

    Use a name under one of :data:`PROJECT_LOGGERS` (normally ``__name__``); other names propagate to
    the root logger and are printed the way Prefect prints them.
    """
    return logging.getLogger(name)


def in_pytest() -> bool:
    """True inside a pytest run, where log files would litter the tree and INFO output drowns failures."""
    return "pytest" in sys.modules or "PYTEST_CURRENT_TEST" in os.environ


_in_pytest = in_pytest  # the name the operations guide uses


def register_secret(value: str) -> None:
    """Mask every later occurrence of ``value`` in log output, wherever it appears.

    Patterns cannot recognise a bare secret (a webhook secret is just a random string), so the loaded
    secrets are registered by value. Values under 8 characters are ignored: masking every "admin" or
    "1234" in the logs would destroy them while protecting nothing.
    """
    global _secrets
    if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def redact(text: str) -> str:
    """Mask registered secrets, URL passwords, bearer tokens, JWTs and ``key=value`` secrets in ``text``.

    Every log line and SSE message passes through here, so each pattern runs only when the text holds
    what a match needs (``://``, ``eyJ``, ``bearer``, a sensitive key name beside ``:`` or ``=``): the
    same result as running them all, at a fraction of the cost for ordinary text. Non-ASCII text gets
    every pattern, because case-insensitive matching can pair a non-ASCII letter with an ASCII one.
    """
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if not text.isascii():
        return _apply_patterns(text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<keep>{MASK}", text)
    if ("=" in text or ":" in text) and _names_sensitive_key(lowered):
        text = _KEY_VALUE.sub(_mask_value, text)
    return text


def _apply_patterns(text: str) -> str:
    """Every pattern, unconditionally: the reference the fast path of :func:`redact` must agree with."""
    text = _URL_CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(rf"\g<keep>{MASK}", text)
    return _KEY_VALUE.sub(_mask_value, text)


def _names_sensitive_key(lowered: str) -> bool:
    """Whether ``lowered`` contains a sensitive key name, spelt with ``_``, ``-`` or nothing between its parts."""
    squashed = lowered.replace("_", "").replace("-", "")
    return any(hint in squashed for hint in _KEY_HINTS)


def _mask_value(match: re.Match[str]) -> str:
    """Keep the quotes of a quoted value so JSON and repr() output keeps its shape."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('keep')}{quote}{MASK}{quote}"


@functools.lru_cache(maxsize=4096)  # the same few extra= keys come with every record
def _is_sensitive(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(name in lowered for name in _SENSITIVE)


def redact_structure(value: Any, *, max_depth: int = DATA_DEPTH) -> Any:
    """``value`` with every secret :func:`redact` finds masked, and every value under a sensitive key
    (``password``, ``token``, ...) replaced by ``***``; dicts and lists keep their shape.

    The one masking rule for structured data: log ``extra=`` fields, the SSE stream and every API
    response carrying task params, metadata, results, errors or events go through here, so what one
    shows masked no other shows in clear. Keys are redacted too (a URL with a password can be a key).
    Containers deeper than ``max_depth`` are masked as their text instead of recursed into: log
    extras may reference themselves, and no caller may hit the recursion limit. Linear in the size.
    """
    return _redact_value(value, max_depth)


def _redact_field(key: str, value: Any) -> Any:
    return MASK if _is_sensitive(key) else _redact_value(value, _MAX_DEPTH)


def _redact_value(value: Any, depth_left: int) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN):
        return value
    if depth_left > 0 and isinstance(value, Mapping):
        return {(redact(key) if isinstance(key, str) else key):
                MASK if _is_sensitive(str(key)) else _redact_value(item, depth_left - 1)
                for key, item in value.items()}
    if depth_left > 0 and isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(item, depth_left - 1) for item in value]
    # Any other object reaches the log through str(); keep it as is unless that text leaks something.
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object whose str() fails is logged as it is, not as a crash
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactingFilter(logging.Filter):
    """Mask secrets in the message, the ``extra=`` fields, the traceback and the stack of a record.

    The message is rendered here, once, because a secret is often an *argument* (``"%s", url``) and
    only the rendered text shows it; ``args`` is then cleared so no formatter renders it again.
    """

    _exception_formatter: ClassVar[logging.Formatter] = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record in _redacted:  # each handler has this filter: the second one finds the work done
            return True
        _redacted.add(record)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad format args must not turn a log call into a crash
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info:
            # Formatters (python-json-logger included) re-render exc_info on their own; leaving only
            # the redacted exc_text is what keeps the traceback's secrets out of every format.
            record.exc_text = record.exc_text or self._exception_formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, _redact_field(key, value))
        return True


def configure_logging(
    settings: LoggingSettings, *, force: bool = False, allow_file_in_pytest: bool = False,
    shared_file: bool = False,
) -> None:
    """Attach the project's handlers to :data:`PROJECT_LOGGERS` once per process.

    Idempotent because the API, the CLI and flow code may all call it; a second set of handlers would
    print every line twice. ``force=True`` replaces the previous setup. ``shared_file=True`` (several API
    workers on one file) appends without rotating: processes that each rotate one file lose lines, so
    logrotate moves it and every writer reopens it. Under pytest the level is
    WARNING (unless ``ORCH_LOG_LEVEL``/``LOG_LEVEL`` is set) and no file is written unless a test asks
    for one with ``allow_file_in_pytest=True``.
    """
    global _configured
    with _lock:
        if _configured and not force:
            return
        _restore()
        testing = in_pytest()
        level = _level_from_env() or ("WARNING" if testing else settings.level)
        console = logging.StreamHandler(sys.stderr)
        handlers: list[logging.Handler] = [console]
        if settings.file and (allow_file_in_pytest or not testing):
            handlers.append(_file_handler(settings.file, settings.max_size, settings.backup_count, shared_file))
            console.setLevel(settings.console_level)  # the file has every line; stderr need not repeat them
        formatter = _json_formatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
        redacting = RedactingFilter()
        for handler in handlers:
            handler.setFormatter(formatter)
            handler.addFilter(redacting)
        _handlers.extend(handlers)

        for name in PROJECT_LOGGERS:
            logger = _take(name)
            # Owned means owned: a handler someone else put here (Prefect's logging.yml gives "uvicorn"
            # its console handler) would print each line a second time.
            for foreign in list(logger.handlers):
                logger.removeHandler(foreign)
            for handler in handlers:
                logger.addHandler(handler)
            logger.propagate = False
            # Only namespace roots get the level; children such as "uvicorn.access" inherit it, so a
            # per-module "uvicorn: WARNING" covers them too.
            is_child = any(name.startswith(f"{parent}.") for parent in PROJECT_LOGGERS)
            logger.setLevel(logging.NOTSET if is_child else level)
        for name, module_level in settings.loggers.items():
            _take(name).setLevel(module_level)
        _configured = True


def configure_process_logging(settings: Settings, *, write_file: bool, quiet: bool = False,
                              shared_file: bool = False) -> None:
    """Mask this configuration's secrets, then configure logging; what every ORCH entry point calls.

    Only the long-running API passes ``write_file=True``: two processes rotating one file garble it.
    ``quiet`` (CLI commands) logs WARNING and above unless ``ORCH_LOG_LEVEL``/``LOG_LEVEL`` say otherwise:
    a person at a terminal wants the command's answer, not its event log.
    """
    for value in settings.secret_values():
        register_secret(value)
    update: dict[str, object] = {} if write_file else {"file": None}
    if quiet:
        update["level"] = "WARNING"
    configure_logging(settings.logging.model_copy(update=update) if update else settings.logging,
                      shared_file=shared_file)


def reset_logging() -> None:
    """Undo :func:`configure_logging`: close its handlers and restore the loggers it changed.

    Tests need it so one test's handlers (and open log files) never leak into the next.
    """
    global _configured
    with _lock:
        _restore()
        _configured = False


def _take(name: str) -> logging.Logger:
    """Return the logger, remembering its state the first time so :func:`reset_logging` can restore it."""
    logger = logging.getLogger(name)
    _saved.setdefault(name, (logger.level, logger.propagate, list(logger.handlers)))
    return logger


def _restore() -> None:
    for name, (level, propagate, handlers) in _saved.items():
        logger = logging.getLogger(name)
        for handler in _handlers:
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    for handler in _handlers:
        handler.close()
    _handlers.clear()
    _saved.clear()


def _file_handler(path: str, max_bytes: int, backup_count: int, shared: bool = False) -> logging.Handler:
    # Imported here: logging.handlers pulls in socket and pickle, and most importers never write a file.
    import logging.handlers

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if shared:  # append mode, one write() per line (up to the 8 KB buffer): lines of processes do not mix
        return logging.handlers.WatchedFileHandler(path, encoding="utf-8")

    class SizeCountingRotatingFileHandler(logging.handlers.RotatingFileHandler):
        """Rotation by a byte count kept in memory instead of asking the file system on every record.

        Python 3.11's check stats the path twice and seeks the file for each line, four system calls
        per record, and the API writes a line per request. Only one process writes this file (see
        :func:`configure_process_logging`), so the count it keeps is the file's size.
        """

        _size = 0
        _pending = 0
        _regular = True

        def _open(self):  # type: ignore[no-untyped-def]
            stream = super()._open()
            info = os.fstat(stream.fileno())
            self._size, self._regular = info.st_size, stat.S_ISREG(info.st_mode)  # never roll a device
            return stream

        def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - the stdlib's name
            if self.stream is None:
                self.stream = self._open()
            message = self.format(record)
            self._pending = (len(message) if message.isascii() else len(message.encode("utf-8"))) + 1
            return self._regular and 0 < self.maxBytes <= self._size + self._pending

        def emit(self, record: logging.LogRecord) -> None:
            super().emit(record)
            self._size += self._pending

    return SizeCountingRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")


def _level_from_env() -> str | None:
    """The environment beats the config file so an operator can turn on DEBUG without editing YAML."""
    for var in LEVEL_ENV_VARS:
        value = os.environ.get(var, "").strip().upper()
        if value:
            if value not in _LEVELS:
                raise ValueError(f"{var} must be one of {', '.join(_LEVELS)}, got {value!r}")
            return value
    return None


def _json_formatter() -> logging.Formatter:
    """One JSON object per line with ``extra=`` fields at the top level, so log tools can filter on them."""
    from pythonjsonlogger.orjson import OrjsonFormatter  # the stdlib encoder was a third of a line's cost

    class OncePerRecord(OrjsonFormatter):  # type: ignore[misc]
        """The same record goes to stderr and the file: serialise it once, not once per handler."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._done: weakref.WeakKeyDictionary[logging.LogRecord, str] = weakref.WeakKeyDictionary()

        def format(self, record: logging.LogRecord) -> str:
            text = self._done.get(record)
            if text is None:
                text = self._done[record] = super().format(record)
            return text

    return OncePerRecord(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,  # datetime in UTC, serialised as ISO-8601
    )
