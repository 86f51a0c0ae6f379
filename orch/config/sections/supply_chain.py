"""The ``supply_chain`` section: the SBOM, its signature, the security scan and the resource guard."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from orch.config.sections.base import Section, parse_size


class ResourceGuardSettings(Section):
    """The guide's resource guard: warn (or fail, when strict) on a busy CPU or a nearly full disk."""

    cpu_percent: float = Field(default=80, gt=0, le=100, description="CPU use above which the guard trips.")
    min_free_disk: int = Field(default=1024**3, description="Free bytes (or a size such as 1GB) below which "
                               "the guard trips, on the disk holding data_dir.")
    strict: bool = Field(default=False, description="Fail instead of warn; RESOURCE_GUARD_STRICT=true also "
                         "turns it on.")

    @field_validator("min_free_disk", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)


class SupplyChainSettings(Section):
    """SBOM, its signature, and the security scan (paths resolve against ORCH_HOME, the checkout)."""

    sbom_path: str = Field(default="observability/sbom/sbom.json", description="Where the SBOM is written "
                           "(sbom.sig and sbom.pub.pem go beside it).")
    keys_dir: str = Field(default="observability/sbom/keys", description="private_key.pem (mode 0600) and "
                          "public_key.pem used to sign and verify the SBOM.")
    signing_key_block: str | None = Field(default=None, description="Name of a Prefect Secret block holding "
                                          "the PEM private key; when set, the sbom flow signs with it.")
    reports_dir: str = Field(default="security_reports", description="Security reports and scanner output.")
    repo_dir: str = Field(default=".", description="The repository the secret scan and bandit look at.")
    code_paths: list[str] = Field(default_factory=lambda: ["orch", "flows", "tasks", "blocks", "deployments",
                                                           "scripts"],
                                  description="Directories of repo_dir that bandit and semgrep scan.")
    secrets_baseline: str = Field(default=".secrets.baseline", description="Accepted secret-scan findings "
                                  "(detect-secrets baseline format), relative to repo_dir.")
    eol_table: str = Field(default="security/eol.yaml", description="The dated EOL table, relative to repo_dir.")
    semgrep_rules: str = Field(default="security/semgrep", description="Semgrep rules, relative to repo_dir.")
    osv_db_dir: str | None = Field(default=None, description="An offline OSV database (PyPI advisories as "
                                   "JSON files or all.zip) for the dependency audit; unset: pip-audit online.")
    audit_timeout: int = Field(default=120, gt=0, description="Seconds the dependency audit may take.")
    fail_on_severity: Literal["low", "medium", "high"] = Field(default="medium", description="Lowest bandit/"
                                                               "semgrep severity that fails the scan.")
    resource_guard: ResourceGuardSettings = Field(default_factory=ResourceGuardSettings)
