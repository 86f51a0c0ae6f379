#!/usr/bin/env python
"""The guide's ``scripts/health_check.py``: database integrity, schema revision and tasks in the last hour.

A thin entry into ``orch db check`` (the same check ``orch doctor`` and the ``db-health`` flow run), so
the guide's line ``if ! python scripts/health_check.py; then <restore>`` keeps its meaning: exit 1 only
when the *database* is unhealthy (a Prefect outage is not a reason to restore). ``orch doctor`` checks
everything else. Prints ``Database healthy - N tasks in last hour`` or ``error: Database unhealthy - ...``.

    python scripts/health_check.py [-c /etc/orch-next/config.yaml]
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Cron runs the guide's lines from the user's home; data/ and logs/ belong to this checkout.
    os.environ.setdefault("ORCH_HOME", str(Path(__file__).resolve().parent.parent))
    from orch.cli.main import app

    app(["db", "check", *sys.argv[1:]], prog_name="health_check.py")
