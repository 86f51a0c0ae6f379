"""EOL check: the running Python and key dependencies against the dated table in the repository.

A release line past its end of life fails; one ending within ``warn_days`` warns. A version newer than
every line the table lists for its product is "newer", neither a failure nor a warning: its line came
after the newest one the reviewer saw, so no end of life can have been announced for it when the table
was reviewed; it asks for a line at the next review (failing it would turn the check red on every
upgrade to a new release line). A line older than every listed one or between listed ones, and a product
that is not installed, are "not checked" rather than passed: there the table has no answer, and an old
line may well be past its end. A table older than its own ``fresh_for_days`` is reported as stale (a
warning: its answers may miss new announcements).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from orch.supply_chain.errors import SupplyChainError
from orch.supply_chain.results import ScannerResult


@dataclass(frozen=True)
class EolEntry:
    product: str
    version: str
    cycle: str | None
    eol: date | None
    status: str  # ok | warning | failed | newer | not_checked
    detail: str


@dataclass
class EolResult:
    entries: list[EolEntry] = field(default_factory=list)
    table_reviewed: date | None = None
    table_stale: bool = False

    @property
    def failed(self) -> list[EolEntry]:
        return [e for e in self.entries if e.status == "failed"]

    @property
    def warnings(self) -> list[EolEntry]:
        return [e for e in self.entries if e.status == "warning"]

    def scanner_result(self) -> ScannerResult:
        """The one summary ``orch scan``, the security-scan flow and check_eol.py print, e.g.
        ``eol: passed (5 checked; 1 newer than the table (cryptography 51.0.1))``: only what the table
        judged counts as checked."""
        findings = [{"product": e.product, "version": e.version, "cycle": e.cycle,
                     "eol": str(e.eol) if e.eol else None, "status": e.status, "text": e.detail}
                    for e in self.entries]
        newer = [f"{e.product} {e.version}" for e in self.entries if e.status == "newer"]
        unchecked = [e.product for e in self.entries if e.status == "not_checked"]
        notes = [f"{len(self.entries) - len(newer) - len(unchecked)} checked"]
        notes += [f"{len(newer)} newer than the table ({', '.join(newer)})"] if newer else []
        notes += [f"{len(unchecked)} not checked ({', '.join(unchecked)})"] if unchecked else []
        notes += [f"table reviewed {self.table_reviewed} is stale"] if self.table_stale else []
        if self.failed:
            return ScannerResult("eol", "failed", "; ".join([e.detail for e in self.failed] + notes),
                                 {"high": len(self.failed)}, findings)
        if self.warnings or self.table_stale:
            return ScannerResult("eol", "warning", "; ".join([e.detail for e in self.warnings] + notes),
                                 {"medium": len(self.warnings)} if self.warnings else {}, findings)
        return ScannerResult("eol", "passed", "; ".join(notes), {}, findings)

    def to_dict(self) -> dict[str, Any]:
        return {"table_reviewed": str(self.table_reviewed), "table_stale": self.table_stale,
                "entries": [{**asdict(e), "eol": str(e.eol) if e.eol else None} for e in self.entries]}


def load_table(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise SupplyChainError(f"no EOL table at {path}")
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(table.get("reviewed"), date) or not isinstance(table.get("products"), dict):
            raise ValueError("needs a `reviewed` date and a `products` mapping")
        for product, cycles in table["products"].items():
            for cycle, end in (cycles or {}).items():
                if end is not None and not isinstance(end, date):
                    raise ValueError(f"{product} {cycle}: end of life must be a date (YYYY-MM-DD) or null")
    except (yaml.YAMLError, ValueError, AttributeError) as exc:
        raise SupplyChainError(f"{path}: not a valid EOL table ({exc})") from None
    return dict(table)


def installed_versions(products: list[str]) -> dict[str, str | None]:
    """Installed version of each product (``python`` is this interpreter); None when not installed."""
    versions: dict[str, str | None] = {}
    for product in products:
        if product == "python":
            versions[product] = ".".join(str(part) for part in sys.version_info[:3])
            continue
        try:
            versions[product] = metadata.version(product)
        except metadata.PackageNotFoundError:
            versions[product] = None
    return versions


def check(table: dict[str, Any], versions: dict[str, str | None], today: date) -> EolResult:
    """Judge each installed version against the table as of ``today`` (a parameter, so tests pick it)."""
    reviewed: date = table["reviewed"]
    fresh_for = int(table.get("fresh_for_days", 180))
    warn = timedelta(days=int(table.get("warn_days", 182)))
    result = EolResult(table_reviewed=reviewed, table_stale=today - reviewed > timedelta(days=fresh_for))
    for product, listed in table["products"].items():
        cycles = {str(cycle): end for cycle, end in (listed or {}).items()}
        version = versions.get(product)
        if version is None:
            result.entries.append(EolEntry(product, "-", None, None, "not_checked", "not installed"))
            continue
        cycle = _cycle_of(version, set(cycles))
        latest = None if cycle else _latest_line_before(version, cycles)
        if latest is not None:
            result.entries.append(EolEntry(product, version, None, None, "newer",
                                           f"{product} {version} is newer than the table's latest line "
                                           f"({latest}); no end of life can have been announced for it when "
                                           f"the table was reviewed ({reviewed})"))
            continue
        if cycle is None:
            result.entries.append(EolEntry(product, version, None, None, "not_checked",
                                           f"release line of {version} is not in the EOL table"))
            continue
        result.entries.append(_judge(product, version, cycle, cycles[cycle], today, warn))
    return result


def _judge(product: str, version: str, cycle: str, end: date | None, today: date, warn: timedelta) -> EolEntry:
    if end is None:
        return EolEntry(product, version, cycle, None, "ok", "no end of life announced")
    if end < today:
        return EolEntry(product, version, cycle, end, "failed", f"{product} {cycle} reached end of life on {end}")
    if end - today <= warn:
        return EolEntry(product, version, cycle, end, "warning",
                        f"{product} {cycle} reaches end of life on {end} ({(end - today).days} days)")
    return EolEntry(product, version, cycle, end, "ok", f"supported until {end}")


def _cycle_of(version: str, cycles: set[str]) -> str | None:
    """The most specific listed release line of ``version``: ``3.11`` before ``3``."""
    parts = version.split(".")
    for length in range(len(parts), 0, -1):
        candidate = ".".join(parts[:length])
        if candidate in cycles:
            return candidate
    return None


def _latest_line_before(version: str, cycles: Iterable[str]) -> str | None:
    """The table's latest line when ``version`` comes after every listed line, else None.

    Compared as numbers (``packaging``), at each line's own length: ``51.0.1`` after ``50``, ``3.15.0``
    after ``3.9`` and ``3.14`` (as text, "3.15" < "3.9"), ``2.2.0`` after ``2.1``. An unparsable version or
    line answers None, so that version stays "not checked".
    """
    try:
        release = Version(version).release
        lines = {cycle: Version(cycle).release for cycle in cycles}
    except InvalidVersion:
        return None
    if not lines or not all(release[:len(line)] > line for line in lines.values()):
        return None
    return max(lines, key=lambda cycle: lines[cycle])


def run_check(table_path: Path, today: date | None = None) -> EolResult:
    table = load_table(table_path)
    return check(table, installed_versions(list(table["products"])), today or date.today())
