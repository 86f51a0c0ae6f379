"""Supply-chain tasks: SBOM generation, signing and verification, each security scanner, the report.

Small and retried: a scanner or a signing-key lookup can hit a transient problem (a busy disk, a Prefect
API hiccup loading the Secret block); a scanner that *cannot* check reports "not checked" instead of
raising, so retries are for surprises only. Heavy imports (cyclonedx, detect-secrets, bandit) happen
inside the functions these tasks call.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from orch.config.runtime import get_settings
from orch.supply_chain.report import SecurityReport
from orch.supply_chain.results import ScannerResult

RETRIES: dict[str, Any] = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                               retry_jitter_factor=0.2, cache_policy=NO_CACHE)
REPORT_ARTIFACT_KEY = "security-report"


@task(name="generate-sbom", **RETRIES)
def generate_sbom() -> dict[str, Any]:
    """CycloneDX 1.6 JSON of this environment, validated, written to supply_chain.sbom_path."""
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.sbom import write_sbom

    paths = SbomPaths.from_settings(get_settings().supply_chain)
    return write_sbom(paths.pyproject, paths.sbom)


@task(name="sign-sbom", **RETRIES)
def sign_sbom() -> dict[str, Any]:
    """Detached RSA-PSS signature beside the SBOM, with the Secret block's key or the keys directory's."""
    from orch.supply_chain.keys import signing_key
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.signing import sign_detached

    chain = get_settings().supply_chain
    paths = SbomPaths.from_settings(chain)
    return sign_detached(paths.sbom, paths.signature, signing_key(chain))


@task(name="scan", task_run_name="scan-{name}", **RETRIES)
def run_scanner(name: str) -> ScannerResult:
    from orch.supply_chain.scan import run_one

    return run_one(name, get_settings())


@task(name="write-security-report", **RETRIES)
def write_security_report(results: list[ScannerResult], started_at: datetime) -> SecurityReport:
    from orch.supply_chain.report import write_report
    from orch.supply_chain.scan import reports_dir

    settings = get_settings()
    return write_report(SecurityReport(results, started_at, datetime.now(timezone.utc)), reports_dir(settings))


@task(name="publish-security-report", **RETRIES)
def publish_security_report(report: SecurityReport) -> str:
    """The markdown report as the ``security-report`` artifact of this flow run (history in the UI)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=REPORT_ARTIFACT_KEY, markdown=report.to_markdown(),
                             description=f"Security scan: {report.verdict()}")
    return REPORT_ARTIFACT_KEY


@task(name="notify", **RETRIES)
def notify(title: str, lines: list[str], severity: str = "critical") -> list[str]:
    """Through ORCH's notification blocks; returns the blocks that delivered (none configured: [])."""
    from orch.notify import send_notification

    return send_notification(get_settings(), title, "\n".join(lines), severity)
