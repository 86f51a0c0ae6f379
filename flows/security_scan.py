"""The guide's security scan (scripts/security_scan.sh) as a flow: every scanner, one report, alerts.

Each scanner is its own task, so a slow one (the dependency audit waits on the network) does not hold
up the others, and the Prefect UI shows which one failed. The report is written to
``security_reports/`` and published as the ``security-report`` artifact; high-severity findings or a
failed SBOM verification notify through the notification blocks; any failed scanner fails the run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger

from orch.supply_chain.scan import SCANNERS
from tasks import supply_chain


class SecurityScanFailed(RuntimeError):
    """Raised after the report is published, so the run shows red and failure automations fire."""


@flow(name="security-scan")
def security_scan(scanners: list[str] | None = None) -> dict[str, Any]:
    """Secret scan, EOL check, bandit, dependency audit, semgrep, resource guard and SBOM verification."""
    logger = get_run_logger()
    unknown = sorted(set(scanners or []) - set(SCANNERS))
    if unknown:
        raise ValueError(f"unknown scanner(s) {', '.join(unknown)}; choose from {', '.join(SCANNERS)}")
    started = datetime.now(timezone.utc)
    chosen = [name for name in SCANNERS if not scanners or name in scanners]
    # The resource guard samples the CPU first, alone: measured during the other scanners it would see them.
    guard = [supply_chain.run_scanner("resources")] if "resources" in chosen else []
    futures = {name: supply_chain.run_scanner.submit(name) for name in chosen if name != "resources"}
    results = {name: future.result() for name, future in futures.items()} | {r.name: r for r in guard}
    report = supply_chain.write_security_report([results[name] for name in chosen], started)
    supply_chain.publish_security_report(report)
    for line in report.summary_lines():
        logger.info(line)
    if report.needs_attention:
        supply_chain.notify(f"Security scan: {len(report.needs_attention)} scanner(s) need attention",
                            [r.summary() for r in report.needs_attention] + [f"report: {report.paths['markdown']}"])
    if report.failed:
        raise SecurityScanFailed("; ".join(r.summary() for r in report.failed))
    return report.to_dict()
