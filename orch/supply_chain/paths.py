"""Where the supply-chain files live, from ``settings.supply_chain`` (relative to ORCH_HOME)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orch.config.loader import project_home
from orch.config.schema import SupplyChainSettings


def resolve(path: str, base: Path | None = None) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base or project_home()) / candidate


@dataclass(frozen=True)
class SbomPaths:
    sbom: Path
    signature: Path
    keys_dir: Path
    pyproject: Path

    @classmethod
    def from_settings(cls, supply_chain: SupplyChainSettings) -> SbomPaths:
        sbom = resolve(supply_chain.sbom_path)
        return cls(sbom=sbom, signature=sbom.with_suffix(".sig"), keys_dir=resolve(supply_chain.keys_dir),
                   pyproject=resolve(supply_chain.repo_dir) / "pyproject.toml")
