"""The guide's ``scripts/restore_database.py <backup_file|latest>``.

Verifies the backup on a copy first (checksum, integrity, data-quality suite), keeps a pre-restore copy,
swaps in one transaction and rolls back on failure. Same code as ``orch backup restore`` and the
``restore`` flow. Exit 1 with one ``error:`` line when it refused or failed (nothing changed then).
"""

from __future__ import annotations

import sys


def main() -> int:
    from orch.backup.restore import restore_backup
    from orch.config.loader import load_settings
    from orch.errors import OrchError

    if len(sys.argv) != 2:
        print("Usage: python restore_database.py <backup_file|latest>", file=sys.stderr)
        return 2
    try:
        report = restore_backup(load_settings(), sys.argv[1], owner="restore:script")
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Current database backed up to: {report['pre_restore_copy']}")
    print(f"Database restored successfully from: {report['restored']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
