"""EOL check: the running Python and key dependencies against the dated table in the repository.

A release line past its end of life fails; one ending within ``warn_days`` warns; a line the table does
not list, or a product that is not installed, is "not checked" rather than passed. A table older than
its own ``fresh_for_days`` is reported as stale (a warning: its answers may miss new announcements).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from orch.supply_chain.errors import SupplyChainError


@dataclass(frozen=True)
class EolEntry:
    product: str
    version: str
    cycle: str | None
    eol: date | None
    status: str  # ok | warning | failed | not_checked
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


def run_check(table_path: Path, today: date | None = None) -> EolResult:
    table = load_table(table_path)
    return check(table, installed_versions(list(table["products"])), today or date.today())
