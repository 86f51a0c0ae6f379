"""What writes ORCH's log lines: the redacting filter every handler carries, the log file's handler and
the two line formats (JSON, text). :mod:`orch.logging_config` puts them together on the project's loggers.

Why the filter sits on every handler: a token, password or database URL that slips into a message, an
``extra=`` field or a traceback is masked (:mod:`orch.redaction`) at the last point before it is written,
whatever code produced it.

Imported by every process that logs, so ``logging.handlers`` and python-json-logger are imported only
when a file handler or the JSON format is actually made.
"""

from __future__ import annotations

import logging
import os
import stat
import weakref
from pathlib import Path
from typing import Any, ClassVar

from orch.redaction import redact, redact_field

TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_redacted: weakref.WeakSet[logging.LogRecord] = weakref.WeakSet()  # records already masked


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
                setattr(record, key, redact_field(key, value))
        return True


def file_handler(path: str, max_bytes: int, backup_count: int, shared: bool = False) -> logging.Handler:
    """The log file's handler: rotating at ``max_bytes``, or, ``shared`` by several writers, appending
    and reopening after logrotate moves the file (processes that each rotate one file lose lines)."""
    # Imported here: logging.handlers pulls in socket and pickle, and most importers never write a file.
    import logging.handlers

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if shared:  # append mode, one write() per line (up to the 8 KB buffer): lines of processes do not mix
        return logging.handlers.WatchedFileHandler(path, encoding="utf-8")

    class SizeCountingRotatingFileHandler(logging.handlers.RotatingFileHandler):
        """Rotation by a byte count kept in memory instead of asking the file system on every record.

        Python 3.11's check stats the path twice and seeks the file for each line, four system calls
        per record, and the API writes a line per request. Only one process writes this file (see
        :func:`orch.logging_config.configure_process_logging`), so the count it keeps is the file's size.
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


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``logging.format``: ``json`` (:func:`json_formatter`) or ``text`` (:data:`TEXT_FORMAT`)."""
    return json_formatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def json_formatter() -> logging.Formatter:
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
