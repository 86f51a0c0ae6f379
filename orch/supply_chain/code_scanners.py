"""bandit and semgrep over the project's code, and the dependency vulnerability audit.

Each runs the real tool as a child process (bandit and pip-audit are dependencies; semgrep is the
optional ``semgrep`` extra) and keeps its JSON output in the reports directory. When a tool cannot do
its job (not installed, the vulnerability service unreachable) the result is ``skipped`` or
``not_checked`` with the reason, never ``passed``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from orch.supply_chain.results import ScannerResult, at_least, count_by_severity

_SEMGREP_SEVERITY = {"ERROR": "high", "WARNING": "medium", "INFO": "low"}
_BANDIT_PASSWORD_TESTS = {"B105", "B106", "B107"}
_GHSA_SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MODERATE": "medium", "MEDIUM": "medium", "LOW": "low"}


def _fresh(out: Path) -> None:
    """No output file from an earlier run: a tool that fails before writing must not be read as a result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)


def run_bandit(root: Path, code_paths: list[str], out: Path, fail_on: str, timeout: float = 600) -> ScannerResult:
    targets = [p for p in code_paths if (root / p).exists()]
    if not targets:
        return ScannerResult("bandit", "not_checked", f"none of {', '.join(code_paths)} exists under {root}")
    _fresh(out)
    completed = subprocess.run([sys.executable, "-m", "bandit", "-r", *targets, "-f", "json", "-o", str(out), "-q"],
                               cwd=root, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ScannerResult("bandit", "not_checked", f"bandit produced no report (exit {completed.returncode}: "
                             f"{completed.stderr.strip()[-300:]})")
    _redact_bandit(report, out)
    findings = [{"file": r["filename"], "line": r["line_number"], "test": r["test_id"],
                 "severity": r["issue_severity"].lower(), "confidence": r["issue_confidence"].lower(),
                 "text": r["issue_text"]} for r in report.get("results", [])]
    counts = count_by_severity([f["severity"] for f in findings])
    blocking = [f for f in findings if at_least(f["severity"], fail_on)]
    lines = report.get("metrics", {}).get("_totals", {}).get("loc", 0)
    detail = f"{len(findings)} finding(s) in {lines} lines; {len(blocking)} at or above {fail_on}"
    return ScannerResult("bandit", "failed" if blocking else "passed", detail, counts, findings, str(out))


def _redact_bandit(report: dict[str, Any], out: Path) -> None:
    """Drop what could quote a secret: the code excerpts, and the value in hardcoded-password findings."""
    for result in report.get("results", []):
        result.pop("code", None)
        if result.get("test_id") in _BANDIT_PASSWORD_TESTS:
            result["issue_text"] = "Possible hardcoded password (value not shown)"
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")


def run_semgrep(root: Path, code_paths: list[str], rules: Path, out: Path, fail_on: str,
                timeout: float = 600) -> ScannerResult:
    executable = shutil.which("semgrep") or shutil.which("semgrep", path=str(Path(sys.executable).parent))
    if executable is None:
        return ScannerResult("semgrep", "skipped", "not installed; pip install 'orch-next[semgrep]'")
    if not rules.exists():
        return ScannerResult("semgrep", "not_checked", f"no rules at {rules}")
    targets = [p for p in code_paths if (root / p).exists()]
    _fresh(out)
    completed = subprocess.run([executable, "scan", "--config", str(rules), "--json", "--metrics=off",
                                "--disable-version-check", "--output", str(out), *targets],
                               cwd=root, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ScannerResult("semgrep", "not_checked", f"semgrep produced no report (exit {completed.returncode}: "
                             f"{completed.stderr.strip()[-300:]})")
    findings = [{"file": r["path"], "line": r["start"]["line"], "rule": r["check_id"],
                 "severity": _SEMGREP_SEVERITY.get(r["extra"].get("severity", ""), "unknown"),
                 "text": r["extra"].get("message", "")} for r in report.get("results", [])]
    blocking = [f for f in findings if at_least(f["severity"], fail_on)]
    return ScannerResult("semgrep", "failed" if blocking else "passed",
                         f"{len(findings)} finding(s); {len(blocking)} at or above {fail_on}",
                         count_by_severity([f["severity"] for f in findings]), findings, str(out))


def run_dependency_audit(out: Path, osv_db_dir: Path | None, timeout: float,
                         env: dict[str, str] | None = None) -> ScannerResult:
    """The offline OSV database when one is configured, else pip-audit against its online service."""
    if osv_db_dir is not None:
        return _osv_audit(osv_db_dir, out)
    return _pip_audit(out, timeout, env)


def _pip_audit(out: Path, timeout: float, env: dict[str, str] | None) -> ScannerResult:
    _fresh(out)
    command = [sys.executable, "-m", "pip_audit", "--local", "--format", "json", "--progress-spinner", "off",
               "--timeout", "10", "--output", str(out)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                   env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return ScannerResult("dependencies", "not_checked", f"pip-audit did not finish within {timeout:.0f} s "
                             "(vulnerability service unreachable?)")
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        reason = (completed.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return ScannerResult("dependencies", "not_checked", f"pip-audit could not reach its vulnerability "
                             f"service: {reason}")
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    if not audited:
        reason = skipped[0]["skip_reason"] if skipped else "no dependencies listed"
        return ScannerResult("dependencies", "not_checked", f"pip-audit could not look up any of "
                             f"{len(dependencies)} packages (vulnerability service unreachable?): {reason}",
                             output=str(out))
    findings = [{"package": d["name"], "version": d.get("version"), "id": v["id"],
                 "fix_versions": v.get("fix_versions"),
                 "severity": "unknown", "text": v.get("description", "")[:300]}
                for d in audited for v in d.get("vulns", [])]
    detail = f"{len(audited)} packages audited with pip-audit" + (
        f", {len(skipped)} could not be looked up (not checked)" if skipped else "")
    return ScannerResult("dependencies", "failed" if findings else "passed", f"{len(findings)} known "
                         f"vulnerabilities; {detail}", count_by_severity([f["severity"] for f in findings]),
                         findings, str(out))


def _osv_advisories(db: Path) -> list[dict[str, Any]]:
    """Every advisory of an OSV export: ``*.json`` files in the directory, or its ``all.zip``."""
    advisories = []
    for path in sorted(db.rglob("*.json")):
        advisories.append(json.loads(path.read_text(encoding="utf-8")))
    for archive in sorted(db.rglob("*.zip")):
        with zipfile.ZipFile(archive) as bundle:
            advisories += [json.loads(bundle.read(name)) for name in bundle.namelist() if name.endswith(".json")]
    return advisories


def _osv_audit(db: Path, out: Path) -> ScannerResult:
    from packaging.utils import canonicalize_name

    if not db.is_dir():
        return ScannerResult("dependencies", "not_checked", f"the OSV database directory {db} does not exist")
    try:
        advisories = _osv_advisories(db)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return ScannerResult("dependencies", "not_checked", f"the OSV database at {db} is unreadable: {exc}")
    if not advisories:
        return ScannerResult("dependencies", "not_checked", f"the OSV database at {db} holds no advisories")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    findings = []
    for advisory in advisories:
        for affected in advisory.get("affected", []):
            package = affected.get("package", {})
            name = canonicalize_name(package.get("name", ""))
            if package.get("ecosystem") != "PyPI" or name not in installed:
                continue
            if _affects(affected, installed[name]):
                severity = str(advisory.get("database_specific", {}).get("severity", "")).upper()
                findings.append({"package": name, "version": installed[name], "id": advisory.get("id"),
                                 "severity": _GHSA_SEVERITY.get(severity, "unknown"),
                                 "text": str(advisory.get("summary", ""))[:300]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"database": str(db), "advisories": len(advisories), "findings": findings}, indent=2))
    return ScannerResult("dependencies", "failed" if findings else "passed",
                         f"{len(findings)} known vulnerabilities; {len(installed)} packages against "
                         f"{len(advisories)} advisories in the offline OSV database {db}",
                         count_by_severity([f["severity"] for f in findings]), findings, str(out))


def _affects(affected: dict[str, Any], version: str) -> bool:
    """OSV semantics: listed in ``versions``, or inside an ECOSYSTEM range (introduced .. fixed)."""
    from packaging.version import InvalidVersion, Version

    if version in affected.get("versions", []):
        return True
    try:
        current = Version(version)
    except InvalidVersion:
        return False
    for span in affected.get("ranges", []):
        if span.get("type") != "ECOSYSTEM":
            continue
        start: Version | None = None  # the open interval's lower bound while inside one
        try:
            for event in span.get("events", []):
                if "introduced" in event:
                    start = Version("0") if event["introduced"] == "0" else Version(event["introduced"])
                elif start is not None and "fixed" in event:
                    if start <= current < Version(event["fixed"]):
                        return True
                    start = None
                elif start is not None and "last_affected" in event:
                    if start <= current <= Version(event["last_affected"]):
                        return True
                    start = None
        except InvalidVersion:
            continue
        if start is not None and current >= start:
            return True
    return False
