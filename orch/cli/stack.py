"""``orch up`` and ``orch doctor``: run the whole local stack, and say whether it is healthy."""

from __future__ import annotations

import json
import os

import typer

from orch.cli.common import ConfigOption


def up(config: ConfigOption = None) -> None:
    """Run the whole local stack: Prefect server, worker, deployments and the ORCH API."""
    # Not load(): it opens the audit log, whose module imports SQLAlchemy; `orch up` audits nothing,
    # and this process becomes the stack's supervisor (orch.stack.up), which must stay small.
    from orch.config.loader import load_settings
    from orch.logging_config import configure_process_logging
    from orch.stack.up import run_stack

    settings = load_settings(config)
    configure_process_logging(settings, write_file=False, quiet=True)
    run_stack(settings, config or os.environ.get("ORCH_CONFIG_PATH"))


def doctor(config: ConfigOption = None) -> None:
    """Print a JSON health verdict (config, database, Prefect, disk); exit 0 only when ok."""
    from orch.doctor import run_doctor

    report = run_doctor(config)
    typer.echo(json.dumps(report, indent=2, default=str))
    raise typer.Exit(0 if report["status"] == "ok" else 1)
