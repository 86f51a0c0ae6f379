#!/usr/bin/env bash
# The guide's scripts/analyze_logs.sh: error frequency, slow requests (> 2 s), authentication failures
# (audit log) and task failure patterns. A thin entry into `orch logs analyze` (same options:
# --log PATH, --audit-log PATH, --since 7d, --slow-ms MS, --json); it tolerates malformed lines.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ORCH_HOME="${ORCH_HOME:-$root}"
orch="$root/.venv/bin/orch"
[ -x "$orch" ] || orch=orch
exec "$orch" logs analyze "$@"
