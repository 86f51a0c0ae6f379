"""The supply-chain evidence as the API and the console show it: the SBOM with whether its signature
verifies now, and the newest security-scan report.

The SBOM is checked the way the security scan's ``sbom`` scanner checks it (the detached signature
against the configured verification key), so the console and the scan never disagree about it.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orch.config.schema import Settings
from orch.supply_chain.errors import SupplyChainError, VerificationFailed
from orch.supply_chain.paths import SbomPaths
from orch.supply_chain.scan import reports_dir

LATEST_REPORT = "security-report-latest.json"


def supply_chain_overview(settings: Settings) -> dict[str, Any]:
    return {"sbom": sbom_status(settings), "scan": scan_status(settings)}


def sbom_status(settings: Settings) -> dict[str, Any] | None:
    """None without an SBOM; ``verified`` None when it cannot be checked now (no key), with why in ``detail``."""
    from orch.supply_chain.keys import verification_key
    from orch.supply_chain.signing import verify_detached

    paths = SbomPaths.from_settings(settings.supply_chain)
    if not paths.sbom.is_file():
        return None
    status: dict[str, Any] = {"path": str(paths.sbom), "generated_at": _generated_at(paths.sbom),
                              "signed": paths.signature.is_file(), "verified": None, "detail": ""}
    if not status["signed"]:
        status["detail"] = f"no signature at {paths.signature}"
        return status
    try:
        facts = verify_detached(paths.sbom, paths.signature, verification_key(settings.supply_chain))
    except VerificationFailed as exc:
        status.update(verified=False, detail=str(exc))
    except SupplyChainError as exc:  # no verification key (or an unreadable one): cannot tell now
        status["detail"] = f"not checked: {exc}"
    else:
        status.update(verified=True, detail=f"signature verified with {facts['key_fingerprint']}")
    return status


def scan_status(settings: Settings) -> dict[str, Any] | None:
    """The newest report of the reports directory (its timestamped name), or None when there is none."""
    directory = reports_dir(settings)
    if not directory.is_dir():
        return None
    reports = sorted(p for p in directory.glob("security-report-*.json") if p.name != LATEST_REPORT)
    newest = reports[-1] if reports else directory / LATEST_REPORT
    if not newest.is_file():
        return None
    try:
        report = json.loads(newest.read_text(encoding="utf-8"))
        scanners = report["scanners"]
        severities: Counter[str] = Counter()
        for scanner in scanners:
            severities.update(scanner.get("counts") or {})
        summary = {"by_status": dict(Counter(s["status"] for s in scanners)), "by_severity": dict(severities),
                   "scanners": {s["name"]: {"status": s["status"], "counts": s.get("counts") or {},
                                            "summary": s.get("summary", "")} for s in scanners}}
        passed, finished = report["verdict"] == "passed", report.get("finished_at")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"path": str(newest), "finished_at": None, "passed": False,
                "summary": {"error": f"unreadable report ({type(exc).__name__}: {exc})"}}
    return {"path": str(newest), "finished_at": finished, "passed": passed, "summary": summary}


def _generated_at(sbom: Path) -> str:
    """The SBOM's own ``metadata.timestamp``; the file's modification time when it has none."""
    try:
        stamp = json.loads(sbom.read_bytes()).get("metadata", {}).get("timestamp")
    except (OSError, ValueError, AttributeError):
        stamp = None
    return str(stamp) if stamp else datetime.fromtimestamp(sbom.stat().st_mtime, timezone.utc).isoformat()

