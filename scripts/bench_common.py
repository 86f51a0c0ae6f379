"""What the benchmarks share: their error, a clean environment, log tails, spreads and machine facts.

Imported by ``scripts/bench_*.py`` (run as scripts, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil


class BenchError(Exception):
    """Something did not start, finish or answer as it should: one line, then the log lines saying why."""

    def __init__(self, message: str, tail: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.tail = list(tail)

    def __str__(self) -> str:
        return "\n".join([self.args[0], *(f"    | {line}" for line in self.tail)])


def clean_environ() -> dict[str, str]:
    """This shell's environment minus anything that would point at someone else's server or database."""
    from orch.config.sources import ENV_ALIASES

    aliases = {name for name, _ in ENV_ALIASES}  # DATABASE_URL, JWT_SECRET, ... are read by ORCH too
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ORCH_")) and k not in aliases}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PYTHONUNBUFFERED"] = "1"  # output lines are timestamped when they arrive
    return env


def log_tail(path: Path, lines: int = 8) -> list[str]:
    """The last non-empty lines of a log: usually the reason something did not come up."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [f"(no log at {path})"]
    return [line for line in text.splitlines() if line.strip()][-lines:] or [f"({path} is empty)"]


def spread(values: list[float], decimals: int = 2) -> dict[str, float]:
    return {"median": round(statistics.median(values), decimals), "min": round(min(values), decimals),
            "max": round(max(values), decimals)}


def machine_info() -> dict[str, object]:
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "prefect": version("prefect"),
            "orch_next": version("orch-next"), "platform": platform.platform(),
            "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_bench(prefix: str, bench: Callable[[Path], dict[str, Any]], write: Callable[[dict[str, Any]], str]) -> int:
    """Run ``bench`` in a fresh temporary directory and print its report; on failure one ``error:`` line,
    and the directory is kept for its logs. The exit code every benchmark script returns."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    started = time.monotonic()
    try:
        report = bench(workdir)
    except (BenchError, KeyboardInterrupt) as exc:
        message = str(exc) if isinstance(exc, BenchError) else "interrupted"
        print(f"error: {message}\n(data and logs kept in {workdir})", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback; the logs say the rest
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {line}\n(data and logs kept in {workdir})", file=sys.stderr)
        return 1
    report["total_s"] = round(time.monotonic() - started, 1)
    shutil.rmtree(workdir, ignore_errors=True)
    print(write(report))
    return 0
