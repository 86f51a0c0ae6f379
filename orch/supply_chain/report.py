"""One security report per run: JSON for machines, markdown for people, one summary line per scanner.

Written to the reports directory as ``security-report-<UTC time>.{json,md}`` and copied to
``security-report-latest.{json,md}``; the flow also publishes the markdown as a Prefect artifact.
Findings carry locations, rule names and hashes, never a secret's value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orch.supply_chain.files import write_atomic
from orch.supply_chain.results import ScannerResult, rank

MAX_FINDINGS_IN_MARKDOWN = 20


@dataclass
class SecurityReport:
    results: list[ScannerResult]
    started_at: datetime
    finished_at: datetime
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[ScannerResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def needs_attention(self) -> list[ScannerResult]:
        """What notifies a human: high-severity findings, or an SBOM that failed verification."""
        return [r for r in self.results if r.status == "failed" and (r.high or r.name == "sbom")]

    def verdict(self) -> str:
        return "failed" if self.failed else "passed"

    def summary_lines(self) -> list[str]:
        return [r.summary() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict(), "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "summary": self.summary_lines(),
                "scanners": [r.to_dict() for r in self.results]}

    def to_markdown(self) -> str:
        lines = [f"# Security report - {self.verdict().upper()}", "",
                 f"{self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                 f"{(self.finished_at - self.started_at).total_seconds():.1f} s",
                 "", "| scanner | result | details |", "|---|---|---|"]
        for result in self.results:
            lines.append(f"| {result.name} | {result.label()} | {_cell(result.details())} |")
        for result in self.results:
            relevant = [f for f in result.findings if f.get("status", "failed") != "ok"]
            relevant.sort(key=lambda f: -rank(str(f.get("severity", "low"))))
            shown = relevant[:MAX_FINDINGS_IN_MARKDOWN] if result.status in ("failed", "warning") else []
            if shown:
                lines += ["", f"## {result.name}", ""]
                lines += [f"- {_describe(f)}" for f in shown]
                if len(relevant) > len(shown):
                    lines.append(f"- ... see the JSON report for all {len(relevant)}")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _describe(finding: dict[str, Any]) -> str:
    where = ":".join(str(finding[k]) for k in ("file", "line") if k in finding)
    what = finding.get("type") or finding.get("test") or finding.get("rule") or finding.get("id") or finding.get(
        "product") or finding.get("reason", "")
    text = finding.get("text", "")
    return " ".join(part for part in (f"`{where}`" if where else "", f"**{what}**",
                                      f"[{finding['severity']}]" if "severity" in finding else "", text) if part)


def write_report(report: SecurityReport, directory: Path) -> SecurityReport:
    stamp = report.started_at.strftime("%Y%m%dT%H%M%SZ")
    document = (json.dumps(report.to_dict(), indent=2, default=str) + "\n").encode("utf-8")
    markdown = report.to_markdown().encode("utf-8")
    for name in (f"security-report-{stamp}", "security-report-latest"):
        write_atomic(directory / f"{name}.json", document)
        write_atomic(directory / f"{name}.md", markdown)
    report.paths = {"json": str(directory / f"security-report-{stamp}.json"),
                    "markdown": str(directory / f"security-report-{stamp}.md")}
    return report
