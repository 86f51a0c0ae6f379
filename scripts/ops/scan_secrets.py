"""The guide's ``python scripts/ops/scan_secrets.py``: secrets in the repository, data and log directories.

Exit 1 when there is a finding the baseline (``.secrets.baseline``) does not accept. Findings name the
file, line, type and the secret's SHA-1, never the secret. ``--update-baseline`` accepts every current
finding: run it only after reviewing each one (``git diff .secrets.baseline`` shows what was added).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orch.config.loader import load_settings
from orch.errors import OrchError
from orch.supply_chain.paths import resolve
from orch.supply_chain.scan import secret_scan_files
from orch.supply_chain.secrets_scan import scan, write_baseline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="Repository to scan (default: supply_chain.repo_dir).")
    parser.add_argument("--baseline", type=Path, help="Baseline file (default: <root>/.secrets.baseline).")
    parser.add_argument("--no-data", action="store_true", help="Skip the data and log directories.")
    parser.add_argument("--update-baseline", action="store_true", help="Accept every current finding.")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(generate_secrets=False)
        root = (args.root or resolve(settings.supply_chain.repo_dir)).resolve()
        baseline = args.baseline or root / settings.supply_chain.secrets_baseline
        files = secret_scan_files(settings, root, data=not args.no_data)
        result = scan(files, root, None if args.update_baseline else baseline, settings.secret_values())
        if args.update_baseline:
            count = write_baseline(baseline, result.new)
            print(f"{baseline}: {count} finding(s) accepted; review them before committing")
            return 0
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for finding in result.new:
        print(f"{finding.filename}:{finding.line_number}: {finding.type} (sha1 {finding.hashed_secret[:12]}…)")
    print(f"secret scan: {result.files_scanned} files, {len(result.new)} new finding(s), "
          f"{len(result.accepted)} accepted by {baseline.name}", file=sys.stderr if result.new else sys.stdout)
    return 1 if result.new else 0


if __name__ == "__main__":
    sys.exit(main())
