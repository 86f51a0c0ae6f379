#!/usr/bin/env python
"""The guide's ``scripts/performance_analysis.py``: average and p95 response time per endpoint with
request counts, then the top errors. A thin entry into ``orch perf report`` (same options:
``--log PATH``, ``--since 7d``, ``--json``).
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Cron runs the guide's lines from the user's home; logs/ belongs to this checkout.
    os.environ.setdefault("ORCH_HOME", str(Path(__file__).resolve().parent.parent))
    from orch.cli.main import app

    app(["perf", "report", *sys.argv[1:]], prog_name="performance_analysis.py")
