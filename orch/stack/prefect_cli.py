"""``python -m orch.stack.prefect_cli ARG...``: Prefect's command line (``prefect ARG...``), in a lean process.

How ``orch up`` and the systemd unit run the Prefect server (``... server start``): the same command, the
same process (Prefect's server runs in the one it is started in), without jsonschema's RFC 3987 grammar
(:mod:`orch.lean_imports`), which every Prefect process otherwise compiles as it imports Prefect:
measured, 1.5 s of CPU off the server's start and 17 MB off its memory.
"""

from __future__ import annotations

import sys

from orch.lean_imports import lean_process


def main() -> None:
    lean_process(prefect=True)
    from prefect.cli import app

    sys.argv[0] = "prefect"  # what its usage and error lines name
    sys.exit(app())


if __name__ == "__main__":
    main()
