#!/usr/bin/env bash
# CI preflight (the guide's kernel.healthcheck()): `orch doctor` on a fresh home with a freshly created
# database. Config, database and disk must be ok; the Prefect server may be down, since CI runs none
# outside the tests (each test session starts its own).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export ORCH_HOME="$home"
"$root/.venv/bin/orch" db init
"$root/.venv/bin/orch" doctor > "$home/doctor.json" || true
"$root/.venv/bin/python" - "$home/doctor.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
broken = {name: c for name, c in report["components"].items() if c["status"] != "ok" and name != "prefect"}
for name, component in broken.items():
    print(f"ci: doctor: {name} is {component['status']}: {component.get('problem') or component}", file=sys.stderr)
print(f"ci: doctor: {report['status']} "
      + ", ".join(f"{name} {c['status']}" for name, c in report["components"].items()))
sys.exit(1 if broken else 0)
PY
