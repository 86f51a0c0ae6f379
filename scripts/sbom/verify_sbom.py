"""The guide's ``python scripts/sbom/verify_sbom.py --sbom … --sig … --keys-dir …``.

The same command as ``orch sbom verify``: exit 0 only when the SBOM is exactly what the key signed;
otherwise exit 1 naming the failed check (SBOM changed, wrong key, missing or malformed signature).
"""

import sys

from orch.cli.main import app

if __name__ == "__main__":
    sys.exit(app(["sbom", "verify", *sys.argv[1:]], prog_name="verify_sbom.py"))
