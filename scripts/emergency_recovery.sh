#!/usr/bin/env bash
# The guide's scripts/emergency_recovery.sh, on ORCH-Next: `orch recover --emergency`.
#
# It checks the disk (old rotated logs and backups past retention go when usage is past
# monitoring.alert_thresholds.disk_usage_percent), restores the newest verified backup if the database
# is corrupt, clears stale locks, re-queues failed tasks, checks health and notifies. Services need not
# be stopped first: the restore pauses dispatch and replaces the data in one SQLite transaction that
# every open connection sees (see docs/backups-and-recovery.md, "Restore while ORCH runs"). Every step prints what it found
# and did; exit 1 means a step failed and a human must look.
# Paths in the configuration resolve against ORCH_HOME, else the working directory (run it from the
# install directory, as the guide does, or set ORCH_HOME).
set -euo pipefail
ORCH="${ORCH_BIN:-$(dirname "$0")/../.venv/bin/orch}"
[ -x "$ORCH" ] || ORCH=orch
echo "EMERGENCY: Starting service recovery procedure"
if "$ORCH" recover --emergency "$@"; then
    echo "Emergency recovery completed successfully"
else
    echo "Emergency recovery failed - manual intervention required" >&2
    exit 1
fi
