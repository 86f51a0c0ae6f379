"""Reading ORCH's JSON log lines the way an operator's log really looks.

A log an analysis has to read is never clean: the worker's log mixes Prefect's plain-text lines with
ORCH's JSON ones, a crash leaves half a line, rotation splits a week over ``orch-next.log.1`` ... and
logrotate gzips old copies. So every file of a log is read oldest first, a line that is not a JSON
object is counted and skipped, and nothing here raises for what is inside a file.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from orch.errors import OrchError

STDIN = "-"
_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TIME_FIELDS = ("timestamp", "asctime", "time")


class LogSourceError(OrchError):
    """None of the logs asked for exists, or a time window cannot be read."""


class LogPathRefused(LogSourceError):
    """A path a flow was asked to read lies outside the directories it may read (never retried)."""


def confine(paths: Iterable[str | Path], directories: list[Path]) -> list[Path]:
    """Each of ``paths`` resolved (symlinks, ``..``) and inside one of ``directories``, or
    :class:`LogPathRefused` naming those outside. Nothing is opened: a flow parameter such as
    ``log_paths=["/etc/passwd"]`` is refused before a byte of it is read. Standard input is refused too:
    a flow run has none."""
    from orch.security.flow_access import confined

    kept: list[Path] = []
    refused: list[str] = []
    for path in paths:
        inside = None if str(path) == STDIN else confined(path, directories)
        if inside is None:
            refused.append(str(path)[:200])
        else:
            kept.append(inside)
    if refused:
        allowed = ", ".join(str(directory) for directory in directories)
        raise LogPathRefused(f"refusing to read {', '.join(map(repr, refused[:5]))}: outside the configured "
                             f"log directories ({allowed})")
    return kept


@dataclass
class ReadStats:
    """What was read, so a report can say how much it is based on (and how much it could not use)."""

    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0  # not a JSON object: plain-text lines, truncated lines, garbage
    undated: int = 0  # no readable timestamp while a time window was asked for
    before_window: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "missing": self.missing, "lines": self.lines, "skipped": self.skipped,
                "undated": self.undated, "before_window": self.before_window}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` back from now, or an ISO-8601 time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    moment = _parse_time(text.strip())
    if moment is None:
        raise LogSourceError(f"--since {text!r}: expected 30m, 24h, 7d, 2w or an ISO-8601 time")
    return moment


def log_files(path: Path) -> list[Path]:
    """``path`` and its rotated copies, oldest first: ``.1`` … ``.N`` (Python's RotatingFileHandler,
    logrotate) and ``.N.gz`` (logrotate's ``compress``); a higher number is older."""
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.glob(f"{glob.escape(path.name)}.*"):
            number = candidate.name[len(path.name) + 1:].removesuffix(".gz")
            if number.isdigit():
                rotated.append((int(number), candidate))
    files = [candidate for _, candidate in sorted(rotated, reverse=True)]
    return files + [path] if path.is_file() else files


def read_entries(paths: Iterable[str | Path], stats: ReadStats,
                 since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Every JSON object logged in ``paths`` (``-`` is standard input), oldest file first.

    With ``since``, entries logged before it, or with no readable time, are counted and left out.
    """
    for source in paths:
        if str(source) == STDIN:
            stats.files.append(STDIN)
            # journalctl output may hold bytes that are not UTF-8; a bad byte must not end the analysis.
            yield from _entries(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"), stats, since)
            continue
        files = log_files(Path(source))
        if not files:
            stats.missing.append(str(source))
        for file in files:
            stats.files.append(str(file))
            with _open(file) as handle:
                yield from _entries(handle, stats, since)


def require_some(stats: ReadStats, what: str) -> None:
    """An analysis of no file at all would report "no errors": say the log is missing instead."""
    if not stats.files:
        raise LogSourceError(f"no {what} found at {', '.join(stats.missing) or '(no path given)'} "
                             "(pass the path, or check logging.file and ORCH_HOME)")


def entry_time(entry: dict[str, Any]) -> datetime | None:
    for name in _TIME_FIELDS:
        value = entry.get(name)
        if isinstance(value, str):
            moment = _parse_time(value)
            if moment is not None:
                return moment
    return None


def _entries(handle: IO[str], stats: ReadStats, since: datetime | None) -> Iterator[dict[str, Any]]:
    for line in handle:
        if not line.strip():
            continue
        stats.lines += 1
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            stats.skipped += 1
            continue
        if since is not None:
            moment = entry_time(entry)
            if moment is None:
                stats.undated += 1
                continue
            if moment < since:
                stats.before_window += 1
                continue
        yield entry


def _open(file: Path) -> IO[str]:
    if file.suffix == ".gz":
        return gzip.open(file, "rt", encoding="utf-8", errors="replace")
    return open(file, encoding="utf-8", errors="replace")


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
