"""The guide's ``python scripts/ops/resource_guard.py``: CPU above 80 % or less than 1 GB free disk.

A warning (exit 0) unless ``RESOURCE_GUARD_STRICT=true`` (or supply_chain.resource_guard.strict), which
makes it exit 1; thresholds come from supply_chain.resource_guard or the options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orch.config.loader import load_settings
from orch.errors import OrchError
from orch.supply_chain.resource_guard import check_resources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-percent", type=float, help="CPU threshold in percent (default 80).")
    parser.add_argument("--min-free-gb", type=float, help="Free disk threshold in GB (default 1).")
    parser.add_argument("--path", type=Path, help="Disk to check (default: data_dir).")
    parser.add_argument("--sample-seconds", type=float, default=1.0, help="CPU sampling time.")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(generate_secrets=False)
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    guard = settings.supply_chain.resource_guard
    if args.cpu_percent is not None:
        guard.cpu_percent = args.cpu_percent
    if args.min_free_gb is not None:
        guard.min_free_disk = int(args.min_free_gb * 1024**3)
    result = check_resources(guard, args.path or Path(settings.data_dir), args.sample_seconds)
    print(f"resource guard: {result.label()} ({result.details()})",
          file=sys.stderr if result.status != "passed" else sys.stdout)
    return 1 if result.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
