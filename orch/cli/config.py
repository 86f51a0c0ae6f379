"""``orch config``: check configuration files."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)


@config_app.command("validate")
def config_validate(path: Annotated[Optional[str], typer.Argument(
        help="YAML file to check (default: $ORCH_CONFIG_PATH, else the built-in defaults).")] = None) -> None:
    """Exit 0 when the configuration is valid, else 1 listing every error with its key path."""
    from orch.config.loader import ConfigError, load_settings

    try:
        settings = load_settings(path, generate_secrets=False)
    except ConfigError as exc:
        source = exc.source or "configuration"
        typer.echo(f"{source}: {len(exc.errors)} error(s)", err=True)
        for line in exc.errors:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1) from None
    from orch.storage.engine import safe_url

    typer.echo(f"{path or os.environ.get('ORCH_CONFIG_PATH') or 'defaults'}: valid "
               f"({settings.environment}, database {safe_url(settings.database.url)})")
