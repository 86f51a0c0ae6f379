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
    """The repository's files, then the data and log directories' (once each), minus :func:`not_scanned`."""
    from orch.supply_chain.secrets_scan import directory_files, repository_files

    places = [Path(settings.data_dir)] + ([Path(settings.logging.file).parent] if settings.logging.file else [])
    files = {f.resolve(): f for f in repository_files(root)}
    for place in places if data else []:
        files.update((f.resolve(), f) for f in directory_files(place) if f.resolve() not in files)
    for skipped in not_scanned(settings, root):
        files.pop(skipped.resolve(), None)
    return list(files.values())


def not_scanned(settings: Settings, root: Path) -> list[Path]:
    """The files the secret scan skips by exact path (the reasons are in :mod:`orch.supply_chain.secrets_scan`):
    ORCH's secret store, and files only code writes, whose digests look random to an entropy detector."""
    from orch.backup.catalog import CATALOG
    from orch.config.local_secrets import SECRETS_FILE

    data = Path(settings.data_dir)
    return [data / SECRETS_FILE,
            root / settings.supply_chain.secrets_baseline,
            Path(settings.backup.directory or data / "backups") / CATALOG,
            data / "prefect" / "memo_store.toml"]  # the Prefect server's home under `orch up`


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

    return run_check(repo_dir(settings) / settings.supply_chain.eol_table).scanner_result()


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
