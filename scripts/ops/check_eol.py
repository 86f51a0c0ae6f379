"""The guide's ``python scripts/ops/check_eol.py``: Python and key dependencies against security/eol.yaml.

Exit 1 when something is past its end of life; warnings (within 6 months, a stale table), a release line
newer than the table's latest and one the table does not list are printed and exit 0. The last line is
the summary ``orch scan`` prints for the EOL check.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from orch.config.loader import load_settings
from orch.errors import OrchError
from orch.supply_chain.eol import run_check
from orch.supply_chain.paths import resolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, help="EOL table (default: supply_chain.eol_table).")
    parser.add_argument("--today", type=date.fromisoformat, help="Judge as of this date (YYYY-MM-DD).")
    args = parser.parse_args(argv)
    try:
        chain = load_settings(generate_secrets=False).supply_chain
        result = run_check(args.table or resolve(chain.repo_dir) / chain.eol_table, args.today)
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for entry in result.entries:
        print(f"{entry.status.upper().replace('_', ' '):<11} {entry.product} {entry.version}: {entry.detail}")
    if result.table_stale:
        print(f"WARNING     the EOL table was reviewed on {result.table_reviewed}; it is stale, review it")
    print(result.scanner_result().summary())
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
