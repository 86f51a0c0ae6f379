"""``orch sbom generate|sign|verify`` and ``orch scan``: the supply-chain evidence from a terminal or CI.

The same functions the ``sbom`` and ``security-scan`` flows run, without a Prefect server; paths default
to ``supply_chain.*`` in the configuration (relative to ORCH_HOME).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from orch.cli.common import ConfigOption, fail, load

sbom_app = typer.Typer(help="Generate, sign and verify the CycloneDX SBOM.", no_args_is_help=True)

SbomOption = Annotated[Optional[Path], typer.Option("--sbom", help="SBOM file (default: supply_chain.sbom_path).")]
KeysOption = Annotated[Optional[Path], typer.Option("--keys-dir", help="Directory of private_key.pem/public_key.pem "
                                                    "(default: supply_chain.keys_dir).")]


@sbom_app.command("generate")
def generate(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write it.")] = None,
    pyproject: Annotated[Optional[Path], typer.Option(help="The root component's pyproject.toml.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write the validated CycloneDX 1.6 SBOM of this environment (reproducible)."""
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.sbom import write_sbom

    paths = SbomPaths.from_settings(load(config).supply_chain)
    typer.echo(json.dumps(write_sbom(pyproject or paths.pyproject, out or paths.sbom)))


@sbom_app.command("sign")
def sign(
    sbom: SbomOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Detached signature (default: <sbom>.sig).")] = None,
    keys_dir: KeysOption = None,
    generate_key: Annotated[bool, typer.Option("--generate-key", help="Make a new key pair first (short-lived "
                                               "keys, as CI uses them).")] = False,
    embed: Annotated[Optional[Path], typer.Option("--embed", help="Also write a copy of the BOM with an embedded "
                                                  "JSF PS256 signature here.")] = None,
    config: ConfigOption = None,
) -> None:
    """Sign the SBOM with RSA-PSS/SHA-256; the public key is written beside the signature."""
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.signing import PRIVATE_KEY, generate_keys, load_private_key, sign_detached, sign_embedded

    paths = SbomPaths.from_settings(load(config).supply_chain)
    keys = keys_dir or paths.keys_dir
    if generate_key or not (keys / PRIVATE_KEY).exists():
        typer.echo(f"generated a new signing key pair in {keys} ({generate_keys(keys)})", err=True)
    key = load_private_key(keys)
    target = sbom or paths.sbom
    result = sign_detached(target, out or target.with_suffix(".sig"), key)
    if embed:
        result["embedded"] = sign_embedded(target, embed, key)["sbom"]
    typer.echo(json.dumps(result))


@sbom_app.command("verify")
def verify(
    sbom: SbomOption = None,
    sig: Annotated[Optional[Path], typer.Option("--sig", help="Detached signature (default: <sbom>.sig).")] = None,
    keys_dir: KeysOption = None,
    embedded: Annotated[bool, typer.Option("--embedded", help="Verify the JSF signature inside the SBOM "
                                           "instead of a detached one.")] = False,
    config: ConfigOption = None,
) -> None:
    """Exit 0 only when the SBOM is byte-for-byte what the key signed; otherwise name the failed check."""
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.signing import load_public_key, verify_detached, verify_embedded

    paths = SbomPaths.from_settings(load(config).supply_chain)
    key = load_public_key(keys_dir or paths.keys_dir)
    target = sbom or paths.sbom
    result = verify_embedded(target, key) if embedded else verify_detached(
        target, sig or target.with_suffix(".sig"), key)
    if "warning" in result:  # verified, but a person should act on it (an old canonical form)
        typer.echo(f"warning: {result['warning']}", err=True)
    typer.echo(json.dumps(result))


def scan(
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this scanner; repeatable: "
                                                      "secrets, eol, bandit, dependencies, semgrep, resources, "
                                                      "sbom.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the security scan, write the report to supply_chain.reports_dir; exit 1 when a scanner failed."""
    from orch.supply_chain.scan import SCANNERS, run_scan

    unknown = sorted(set(only or []) - set(SCANNERS))
    if unknown:
        fail(f"unknown scanner {', '.join(unknown)} (choose from {', '.join(SCANNERS)})")
    report = run_scan(load(config), only=only or None)
    for line in report.summary_lines():
        typer.echo(line)
    typer.echo(f"report: {report.paths['markdown']}")
    raise typer.Exit(1 if report.failed else 0)
