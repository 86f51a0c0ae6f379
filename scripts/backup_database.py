"""The guide's ``scripts/backup_database.py`` (cron: ``0 2 * * *``): a verified backup, then retention.

The same code as the ``backup`` flow and ``orch backup create``; prefer the ``backup/daily`` deployment,
which Prefect schedules, retries and shows. Exit 1 with one ``error:`` line when the backup failed.
"""

from __future__ import annotations

import sys


def main() -> int:
    from orch.backup.create import create_backup
    from orch.backup.retention import prune
    from orch.config.loader import load_settings
    from orch.errors import OrchError

    kind = sys.argv[1] if len(sys.argv) > 1 else "daily"
    try:
        settings = load_settings()
        entry = create_backup(settings, kind)
        pruned = prune(settings)["remove"]
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Backup created: {entry['file']} (verified, sha256 {entry['sha256']})")
    for item in pruned:
        print(f"Removed old backup: {item['file']} ({item['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
