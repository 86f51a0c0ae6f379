"""The guide's ``scripts/maintain_database.py``: purges past retention, then ANALYZE, REINDEX, VACUUM and
PRAGMA optimize (VACUUM ANALYZE on PostgreSQL). Same code as ``orch db maintain`` and the weekly
``db-maintenance`` flow."""

from __future__ import annotations

import json
import sys


def main() -> int:
    from orch.config.loader import load_settings
    from orch.errors import OrchError
    from orch.maintenance import maintain

    try:
        result = maintain(load_settings())
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print("Database maintenance completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
