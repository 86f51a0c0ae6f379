"""``python scripts/sbom/generate_sbom.py [--out PATH]``: the guide's ``cyclonedx-bom -o observability/sbom/sbom.json``.

The same command as ``orch sbom generate``: a validated, reproducible CycloneDX 1.6 SBOM of this environment.
"""

import sys

from orch.cli.main import app

if __name__ == "__main__":
    sys.exit(app(["sbom", "generate", *sys.argv[1:]], prog_name="generate_sbom.py"))
