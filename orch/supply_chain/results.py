"""The one shape every scanner reports in, so the report can put one summary line per scanner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "warning", "failed", "not_checked", "skipped"]
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass
class ScannerResult:
    """``passed`` only when the scanner really looked; ``not_checked``/``skipped`` always carry the reason."""

    name: str
    status: Status
    detail: str
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None

    def label(self) -> str:
        return {"not_checked": "not checked"}.get(self.status, self.status)

    def details(self) -> str:
        """Counts by severity first (when failed), then the scanner's own words."""
        counts = ", ".join(f"{self.counts[s]} {s}" for s in SEVERITIES if self.counts.get(s))
        return f"{counts}; {self.detail}" if self.status == "failed" and counts else self.detail

    def summary(self) -> str:
        return f"{self.name}: {self.label()} ({self.details()})"

    @property
    def high(self) -> int:
        return self.counts.get("high", 0) + self.counts.get("critical", 0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary(), "detail": self.detail,
                "counts": self.counts, "findings": self.findings, "output": self.output}


def rank(severity: str) -> int:
    return _RANK.get(severity, 2)


def at_least(severity: str, threshold: str) -> bool:
    """Whether ``severity`` is ``threshold`` or worse (unknown severities count as medium)."""
    return rank(severity) >= _RANK[threshold]


def count_by_severity(severities: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for severity in severities:
        key = severity if severity in SEVERITIES else "unknown"
        counts[key] = counts.get(key, 0) + 1
    return counts
