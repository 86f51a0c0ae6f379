"""What the benchmarks share: their error, a clean environment, log tails, spreads and machine facts.

Imported by ``scripts/bench_*.py`` (run as scripts, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

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
    from orch.config.loader import ENV_ALIASES

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
