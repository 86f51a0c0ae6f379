"""Where this installation's logs are, so ``orch logs analyze`` needs no paths on a standard setup."""

from __future__ import annotations

from pathlib import Path

from orch.config.loader import project_home
from orch.config.schema import Settings


def default_log_paths(settings: Settings) -> list[Path]:
    """The API's JSON log (``logging.file``; access lines, errors, ``task.created``) and the worker's
    log under ``orch up`` (the dispatcher's ``task.*`` events). Under systemd the worker logs to the
    journal instead: pipe ``journalctl -u orch-next-worker -o cat`` in with ``--log -``."""
    api_log = Path(settings.logging.file) if settings.logging.file else project_home() / "logs" / "orch-next.log"
    return [api_log, Path(settings.data_dir) / "logs" / "worker.log"]


def default_audit_paths(settings: Settings) -> list[Path]:
    """``logging.audit_file``: the audit trail as JSON lines (authentication failures live there)."""
    audit = settings.logging.audit_file
    return [Path(audit) if audit else project_home() / "logs" / "audit.log"]
