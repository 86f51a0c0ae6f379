"""The EOL check on tables and versions each test chooses (or reads from this environment), and the guide's
scripts/ops/check_eol.py: nothing here depends on which versions a package registry serves today."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest

from orch.supply_chain.eol import check, load_table

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = [sys.executable, str(ROOT / "scripts" / "ops" / "check_eol.py")]
TABLE = {"reviewed": date(2026, 1, 1), "fresh_for_days": 180, "warn_days": 182,
         "products": {"python": {"3.10": date(2026, 10, 31), "3.11": date(2027, 10, 31), "3.12": date(2028, 10, 31)},
                      "prefect": {"3": None}, "somepkg": {"1": date(2020, 1, 1)}, "newpkg": {"1": None}}}
# Lines as the shipped table writes them: a major line, minor lines, and one with a gap.
LINES = {"reviewed": date(2026, 1, 1),
         "products": {"python": {"3.9": date(2025, 10, 31), "3.10": None, "3.11": None, "3.14": None},
                      "cryptography": {"49": None, "50": None}, "sqlalchemy": {"2.0": None, "2.1": None},
                      "gappy": {"1": None, "3": None}}}


@pytest.mark.parametrize(("python", "today", "status"), [
    ("3.10.14", date(2026, 11, 26), "failed"),  # past
    ("3.11.7", date(2027, 6, 1), "warning"),  # within 6 months
    ("3.12.1", date(2026, 3, 1), "ok"),  # future
    ("3.11.7", date(2027, 10, 31), "warning"),  # the last supported day
])
def test_eol_past_near_and_future_dates(python: str, today: date, status: str) -> None:
    result = check(TABLE, {"python": python, "prefect": "3.9.1", "somepkg": None, "newpkg": "2.0"}, today)
    entries = {e.product: e for e in result.entries}
    assert entries["python"].status == status
    assert entries["prefect"].status == "ok"
    assert entries["somepkg"].status == "not_checked" and entries["somepkg"].detail == "not installed"
    assert entries["newpkg"].status == "newer"


@pytest.mark.parametrize(("product", "installed", "status"), [
    ("cryptography", "51.0.1", "newer"),
    ("cryptography", "100.0", "newer"),
    ("cryptography", "50.0.3", "ok"),  # listed
    ("cryptography", "48.0.0", "not_checked"),  # older than every listed line
    ("python", "3.15.0", "newer"),  # as text, "3.15" sorts before "3.9"
    ("python", "3.15.0a1", "newer"),  # a pre-release of a newer line
    ("python", "3.12.1", "not_checked"),  # between 3.11 and 3.14, not listed
    ("python", "3.8.18", "not_checked"),
    ("python", "3.9.18", "failed"),  # listed, past its end
    ("sqlalchemy", "2.1.9", "ok"),
    ("sqlalchemy", "2.2.0", "newer"),
    ("sqlalchemy", "3.0.0", "newer"),
    ("sqlalchemy", "1.4.52", "not_checked"),
    ("gappy", "2.5", "not_checked"),  # between listed lines
    ("cryptography", "unreleased-build", "not_checked"),  # not a version packaging can compare
])
def test_a_line_newer_than_the_table_is_newer_and_an_older_or_missing_one_not_checked(
        product: str, installed: str, status: str) -> None:
    [entry] = [e for e in check(LINES, {product: installed}, date(2026, 3, 1)).entries if e.product == product]
    assert entry.status == status, entry


def test_newer_says_which_line_the_table_ends_at_and_fails_nothing() -> None:
    result = check(LINES, {"python": "3.11.4", "cryptography": "51.0.1", "gappy": None}, date(2026, 3, 1))
    entries = {e.product: e for e in result.entries}
    assert entries["cryptography"].detail.startswith("cryptography 51.0.1 is newer than the table's latest line "
                                                     "(50); ")
    assert result.failed == [] and result.warnings == []
    summary = result.scanner_result()
    assert summary.status == "passed" and summary.counts == {}
    assert summary.summary() == ("eol: passed (1 checked; 1 newer than the table (cryptography 51.0.1); "
                                 "2 not checked (sqlalchemy, gappy))")


def test_a_newer_line_beside_a_failed_one_still_fails_the_check() -> None:
    result = check(LINES, {"python": "3.9.18", "cryptography": "51.0.1"}, date(2026, 3, 1)).scanner_result()
    assert result.status == "failed" and result.counts == {"high": 1}
    assert result.summary().startswith("eol: failed (1 high; python 3.9 reached end of life on 2025-10-31; "
                                       "1 checked; 1 newer than the table (cryptography 51.0.1); ")


def test_eol_table_older_than_its_freshness_says_so() -> None:
    assert check(TABLE, {}, date(2026, 6, 29)).table_stale is False
    assert check(TABLE, {}, date(2026, 7, 1)).table_stale is True


def test_eol_script_reports_an_installed_line_newer_than_its_table_and_passes(tmp_path: Path) -> None:
    """Against this environment's Prefect: a table whose only Prefect line is 0 is older than any Prefect."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    table = tmp_path / "eol.yaml"
    table.write_text(f"reviewed: 2026-01-01\nfresh_for_days: 100000\nproducts:\n  python:\n    '{python}': null\n"
                     "  prefect:\n    '0': null\n")
    done = subprocess.run([*SCRIPT, "--table", str(table)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = version("prefect")
    assert f"NEWER       prefect {installed}: prefect {installed} is newer than the table's latest line (0)" \
        in done.stdout
    assert done.stdout.splitlines()[-1] == f"eol: passed (1 checked; 1 newer than the table (prefect {installed}))"


def test_eol_script_on_the_shipped_table_and_a_past_date(tmp_path: Path) -> None:
    """The shipped table passes this install on the day it was reviewed, and fails it once this Python's line
    has ended (by then the table is stale too)."""
    shipped = ROOT / "security" / "eol.yaml"
    table = load_table(shipped)
    script = [*SCRIPT, "--table", str(shipped)]
    reviewed = subprocess.run([*script, "--today", str(table["reviewed"])], capture_output=True, text=True,
                              timeout=60)
    assert reviewed.returncode == 0, reviewed.stdout + reviewed.stderr
    end = table["products"]["python"].get(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert end is not None, "the shipped EOL table has no end date for the Python running the tests"
    past = max(end, table["reviewed"] + timedelta(days=int(table["fresh_for_days"]))) + timedelta(days=1)
    late = subprocess.run([*script, "--today", str(past)], capture_output=True, text=True, timeout=60)
    assert late.returncode == 1 and "FAILED" in late.stdout and "stale" in late.stdout
    assert late.stdout.splitlines()[-1].startswith("eol: failed (1 high; python ")
    bad = tmp_path / "eol.yaml"
    bad.write_text("reviewed: 2026-01-01\nproducts:\n  python:\n    '3.11': next year\n")
    broken = subprocess.run([*SCRIPT, "--table", str(bad)], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "must be a date" in broken.stderr
