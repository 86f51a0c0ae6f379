#!/usr/bin/env bash
# The guide's scripts/security_scan.sh: every security scanner, one report in security_reports/.
# Secret scan, EOL check, bandit, dependency audit (pip-audit, or supply_chain.osv_db_dir offline),
# semgrep (when installed), resource guard and SBOM verification. Exit 1 when a scanner failed.
# The same scan runs daily as the `security-scan/daily` deployment. Arguments go to `orch scan`
# (e.g. --only secrets --only eol).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export ORCH_HOME="${ORCH_HOME:-$PWD}"
echo "Running security scans..."
exec "$PYTHON" -c "from orch.cli.main import main; main()" scan "$@"
