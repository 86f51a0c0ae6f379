"""The security scan: each scanner as one function of the settings, and the run that combines them.

The ``security-scan`` flow runs each entry of :data:`SCANNERS` as its own retryable task; ``orch scan``
runs them in order in-process. Both finish with :func:`orch.supply_chain.report.write_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from orch.config.schema import Settings
from orch.supply_chain.errors import SupplyChainError, VerificationFailed
from orch.supply_chain.paths import SbomPaths, resolve
from orch.supply_chain.report import SecurityReport, write_report
from orch.supply_chain.results import ScannerResult


def repo_dir(settings: Settings) -> Path:
    return resolve(settings.supply_chain.repo_dir)


def reports_dir(settings: Settings) -> Path:
    return resolve(settings.supply_chain.reports_dir)


def secret_scan_files(settings: Settings, root: Path, data: bool = True) -> list[Path]:
    """The repository's files, then the data and log directories' (once each); never ORCH's secret store
    or the baseline itself."""
    from orch.config.local_secrets import SECRETS_FILE
    from orch.supply_chain.secrets_scan import directory_files, repository_files

    places = [Path(settings.data_dir)] + ([Path(settings.logging.file).parent] if settings.logging.file else [])
    files = {f.resolve(): f for f in repository_files(root)}
    for place in places if data else []:
        files.update((f.resolve(), f) for f in directory_files(place) if f.resolve() not in files)
    files.pop((Path(settings.data_dir) / SECRETS_FILE).resolve(), None)
    files.pop((root / settings.supply_chain.secrets_baseline).resolve(), None)  # hashes, which look random
    return list(files.values())


def scan_secrets(settings: Settings) -> ScannerResult:
    """Repository, data directory and log directory; new findings fail, baseline ones are counted."""
    from orch.supply_chain.secrets_scan import scan

    root = repo_dir(settings)
    baseline = root / settings.supply_chain.secrets_baseline
    result = scan(secret_scan_files(settings, root), root, baseline, settings.secret_values())
    findings = [{"file": f.filename, "line": f.line_number, "type": f.type, "hashed_secret": f.hashed_secret,
                 "severity": "high"} for f in result.new]
    detail = (f"{result.files_scanned} files, {len(result.new)} new finding(s), {len(result.accepted)} accepted "
              f"by {baseline.name}")
    return ScannerResult("secrets", "failed" if result.new else "passed", detail,
                         {"high": len(result.new)} if result.new else {}, findings)


def check_eol(settings: Settings) -> ScannerResult:
    from orch.supply_chain.eol import run_check

    result = run_check(repo_dir(settings) / settings.supply_chain.eol_table)
    findings = [{"product": e.product, "version": e.version, "cycle": e.cycle, "eol": str(e.eol) if e.eol else None,
                 "status": e.status, "text": e.detail} for e in result.entries]
    unchecked = [e for e in result.entries if e.status == "not_checked"]
    notes = [f"{len(result.entries) - len(unchecked)} checked"]
    notes += [f"{len(unchecked)} not checked ({', '.join(e.product for e in unchecked)})"] if unchecked else []
    notes += [f"table reviewed {result.table_reviewed} is stale"] if result.table_stale else []
    if result.failed:
        return ScannerResult("eol", "failed", "; ".join([e.detail for e in result.failed] + notes),
                             {"high": len(result.failed)}, findings)
    if result.warnings or result.table_stale:
        return ScannerResult("eol", "warning", "; ".join([e.detail for e in result.warnings] + notes),
                             {"medium": len(result.warnings)} if result.warnings else {}, findings)
    return ScannerResult("eol", "passed", "; ".join(notes), {}, findings)


def scan_bandit(settings: Settings) -> ScannerResult:
    from orch.supply_chain.code_scanners import run_bandit

    chain = settings.supply_chain
    return run_bandit(repo_dir(settings), chain.code_paths, reports_dir(settings) / "bandit_report.json",
                      chain.fail_on_severity)


def audit_dependencies(settings: Settings) -> ScannerResult:
    from orch.supply_chain.code_scanners import run_dependency_audit

    chain = settings.supply_chain
    osv = resolve(chain.osv_db_dir) if chain.osv_db_dir else None
    return run_dependency_audit(reports_dir(settings) / "dependency_audit.json", osv, chain.audit_timeout)


def scan_semgrep(settings: Settings) -> ScannerResult:
    from orch.supply_chain.code_scanners import run_semgrep

    chain = settings.supply_chain
    root = repo_dir(settings)
    return run_semgrep(root, chain.code_paths, root / chain.semgrep_rules,
                       reports_dir(settings) / "semgrep_report.json",
                       chain.fail_on_severity)


def guard_resources(settings: Settings) -> ScannerResult:
    from orch.supply_chain.resource_guard import check_resources

    return check_resources(settings.supply_chain.resource_guard, Path(settings.data_dir))


def verify_sbom(settings: Settings) -> ScannerResult:
    """The SBOM on disk against its detached signature; a failed verification counts as high."""
    from orch.supply_chain.keys import verification_key
    from orch.supply_chain.signing import verify_detached

    paths = SbomPaths.from_settings(settings.supply_chain)
    if not paths.sbom.is_file():
        return ScannerResult("sbom", "not_checked", f"no SBOM at {paths.sbom} (run the sbom flow or orch sbom "
                             "generate)")
    try:
        verified = verify_detached(paths.sbom, paths.signature, verification_key(settings.supply_chain))
    except VerificationFailed as exc:
        return ScannerResult("sbom", "failed", str(exc), {"high": 1}, [{"reason": exc.reason, "severity": "high"}])
    except SupplyChainError as exc:
        return ScannerResult("sbom", "not_checked", str(exc))
    return ScannerResult("sbom", "passed", f"signature verified with {verified['key_fingerprint'][:19]}...")


SCANNERS: dict[str, Callable[[Settings], ScannerResult]] = {
    "secrets": scan_secrets, "eol": check_eol, "bandit": scan_bandit, "dependencies": audit_dependencies,
    "semgrep": scan_semgrep, "resources": guard_resources, "sbom": verify_sbom,
}


def run_one(name: str, settings: Settings) -> ScannerResult:
    """One scanner; a missing or broken input (no EOL table, a bad baseline) is "not checked" with why."""
    try:
        return SCANNERS[name](settings)
    except SupplyChainError as exc:
        return ScannerResult(name, "not_checked", str(exc))


def run_scan(settings: Settings, only: list[str] | None = None) -> SecurityReport:
    """Every scanner (or ``only`` these) in-process, then the report written to the reports directory."""
    started = datetime.now(timezone.utc)
    results = [run_one(name, settings) for name in SCANNERS if not only or name in only]
    return write_report(SecurityReport(results, started, datetime.now(timezone.utc)), reports_dir(settings))
