"""The project's one logger factory and logging setup.

Why a project namespace instead of the root logger: Prefect attaches its own handlers (console, API log
shipping) to the root and ``prefect.*`` loggers. Handlers on the root would print every Prefect line a
second time in our format, so ORCH-Next only ever configures the loggers it owns (:data:`PROJECT_LOGGERS`)
and stops them from propagating, which leaves Prefect's run logs exactly as Prefect renders them.

The handlers, their redacting filter and the line formats are :mod:`orch.log_handlers`; what is masked,
and how, is :mod:`orch.redaction`.

This module is imported by everything, so it imports nothing heavy (no pydantic, no Prefect).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from orch.config.levels import LOG_LEVELS
from orch.log_handlers import RedactingFilter, file_handler, formatter
from orch.redaction import register_secret

if TYPE_CHECKING:
    from orch.config.schema import LoggingSettings, Settings

PROJECT_LOGGERS: tuple[str, ...] = (
    "orch", "flows", "tasks", "blocks", "deployments", "uvicorn", "uvicorn.error", "uvicorn.access",
)
LEVEL_ENV_VARS = ("ORCH_LOG_LEVEL", "LOG_LEVEL")  # first one set wins

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
            handlers.append(file_handler(settings.file, settings.max_size, settings.backup_count, shared_file))
            console.setLevel(settings.console_level)  # the file has every line; stderr need not repeat them
        line_format = formatter(settings.format)
        redacting = RedactingFilter()
        for handler in handlers:
            handler.setFormatter(line_format)
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


def _level_from_env() -> str | None:
    """The environment beats the config file so an operator can turn on DEBUG without editing YAML."""
    for var in LEVEL_ENV_VARS:
        value = os.environ.get(var, "").strip().upper()
        if value:
            if value not in LOG_LEVELS:
                raise ValueError(f"{var} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
            return value
    return None
