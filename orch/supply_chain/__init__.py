"""Supply-chain evidence and security scans: the SBOM and its signature, secret scan, EOL check,
code and dependency scanners, the resource guard, and the report that sums them up.

Plain functions over paths and settings; the ``sbom`` and ``security-scan`` flows, the ``orch sbom`` /
``orch scan`` commands and the guide's scripts are thin callers of these modules.
"""
