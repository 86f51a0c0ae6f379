"""The guide's resource guard: CPU use and free disk against thresholds (80 %, 1 GB by default).

Tripping it is a warning unless strict (``supply_chain.resource_guard.strict`` or the guide's
``RESOURCE_GUARD_STRICT=true``), in which case it fails - CI keeps it non-blocking, as the guide says.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orch.config.schema import ResourceGuardSettings
from orch.supply_chain.results import ScannerResult


def strict_requested(settings: ResourceGuardSettings) -> bool:
    return settings.strict or os.environ.get("RESOURCE_GUARD_STRICT", "").strip().lower() in ("1", "true", "yes")


def check_resources(settings: ResourceGuardSettings, disk_path: Path, sample_seconds: float = 1.0) -> ScannerResult:
    import psutil

    cpu = psutil.cpu_percent(interval=sample_seconds)
    probe = disk_path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    problems = []
    if cpu > settings.cpu_percent:
        problems.append(f"CPU {cpu:.0f}% above {settings.cpu_percent:.0f}%")
    if free < settings.min_free_disk:
        problems.append(f"{free / 1024**3:.2f} GB free on {probe}, below {settings.min_free_disk / 1024**3:.2f} GB")
    measured = f"CPU {cpu:.0f}%, {free / 1024**3:.1f} GB free on {probe}"
    if not problems:
        return ScannerResult("resources", "passed", measured)
    strict = strict_requested(settings)
    return ScannerResult("resources", "failed" if strict else "warning",
                         "; ".join(problems) + ("" if strict else " (warning; RESOURCE_GUARD_STRICT=true fails)"))
