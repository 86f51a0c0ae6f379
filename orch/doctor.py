"""``orch doctor``: one JSON verdict on whether this installation can run, for humans and CI.

``down`` means ORCH cannot work (bad config, no database); ``degraded`` means it runs but something an
operator should fix is wrong (Prefect not ready, disk low, PostgreSQL not vacuuming ORCH's tables). Only
``ok`` exits 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

MIN_FREE_BYTES = 1024**3  # the guide's resource guard: 1 GB free


def run_doctor(config_path: str | None = None) -> dict[str, Any]:
    from orch.config.loader import ConfigError, load_settings

    components: dict[str, dict[str, Any]] = {}
    try:
        settings = load_settings(config_path, generate_secrets=False)
    except ConfigError as exc:
        components["config"] = {"status": "down", "errors": exc.errors}
        return {"status": "down", "components": components}
    components["config"] = {"status": "ok", "source": config_path or "defaults + environment",
                            "environment": settings.environment}
    components["database"] = _database(settings)
    components["prefect"] = _prefect(settings)
    components["disk"] = _disk(Path(settings.data_dir), settings.monitoring.alert_thresholds.disk_usage_percent)
    statuses = {c["status"] for c in components.values()}
    status = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
    return {"status": status, "components": components}


def _database(settings: Any) -> dict[str, Any]:
    from orch.storage.engine import StorageError
    from orch.storage.health import autovacuum_problem, check_database

    health = check_database(settings.database)
    result: dict[str, Any] = {"status": "ok" if health.healthy else "down", "url": health.database,
                              "schema": health.schema_revision, "recent_tasks": health.recent_tasks}
    if health.problem:
        result["problem"] = health.problem
        return result
    try:
        problem = autovacuum_problem(settings.database)
    except StorageError as exc:  # the server answered the health check, then not this: say so, do not guess
        problem = f"could not read the server's autovacuum settings: {exc}"
    if problem:  # ORCH runs, but its tables grow with dead rows: an operator should fix it
        result.update(status="degraded", problem=problem)
    return result


def _prefect(settings: Any) -> dict[str, Any]:
    from orch.prefect_api import prefect_readiness

    ready = prefect_readiness(settings.prefect)
    result: dict[str, Any] = {"status": "ok" if ready.ready else "degraded", "url": ready.url,
                              "latency_ms": ready.latency_ms}
    if ready.problem:
        result["problem"] = ready.problem
    return result


def _disk(data_dir: Path, max_used_percent: float) -> dict[str, Any]:
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    used_percent = round(usage.used / usage.total * 100, 1)
    result: dict[str, Any] = {"status": "ok", "path": str(data_dir), "free_bytes": usage.free,
                              "used_percent": used_percent}
    if usage.free < MIN_FREE_BYTES:
        result.update(status="degraded", problem=f"less than 1 GiB free ({usage.free // 1024**2} MiB)")
    elif used_percent >= max_used_percent:
        result.update(status="degraded", problem=f"disk {used_percent}% used (threshold {max_used_percent}%)")
    return result
