"""The guide's ``python scripts/sbom/sign_sbom.py --sbom … --out … --keys-dir …``.

The same command as ``orch sbom sign`` (RSA-PSS/SHA-256 detached signature, public key beside it); a
keys directory without a key pair gets a new one (short-lived keys, as CI uses them).
"""

import sys

from orch.cli.main import app

if __name__ == "__main__":
    sys.exit(app(["sbom", "sign", *sys.argv[1:]], prog_name="sign_sbom.py"))
