"""``orch cores``: the cores at a glance, and ending or imposing their reservations (the CLI side of
``/cores``). The CLI acts as the local administrator, so it may end an isolation too."""

from __future__ import annotations

from typing import Annotated

import typer

from orch.cli.common import ConfigOption, cli_owner, load

cores_app = typer.Typer(help="Manage worker cores.", no_args_is_help=True)


@cores_app.command("list")
def cores_list(config: ConfigOption = None) -> None:
    """Every configured core and every core with tasks: limit, running, queued, reservation."""
    from orch.dispatch.cores_view import cores_overview

    cores = cores_overview(load(config))
    if not cores:
        typer.echo("no cores (none configured, none has tasks)")
        return
    typer.echo(f"{'CORE':<20}  {'CONCURRENCY':>11}  {'RUNNING':>7}  {'QUEUED':>6}  RESERVATION")
    for core in cores:
        held = core["reservation"]
        reservation = f"{held['kind']} by {held['owner']} until {held['expires_at']}" if held else "-"
        typer.echo(f"{core['core_id']:<20}  {core['concurrency']:>11}  {core['running']:>7}  "
                   f"{core['queued']:>6}  {reservation}")


@cores_app.command("release")
def cores_release(core_id: str, config: ConfigOption = None) -> None:
    """End a core's reservation: one left by a --stay task, or an isolation."""
    from orch.dispatch.reservations import NotReserved, release_core

    try:
        released = release_core(load(config), core_id, cli_owner())
    except NotReserved:
        typer.echo(f"core {core_id} was not reserved")
        return
    typer.echo(f"core {core_id} released ({released['kind']} reservation of {released['owner']})")


@cores_app.command("isolate")
def cores_isolate(core_id: str,
                  reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
                  config: ConfigOption = None) -> None:
    """Stop dispatching to a core until `orch cores release CORE`."""
    from orch.dispatch.reservations import isolate_core

    owner = cli_owner()
    isolate_core(load(config), core_id, owner, actor=owner, reason=reason, known_only=True)
    typer.echo(f"core {core_id} isolated: no new tasks are dispatched to it (undo: orch cores release {core_id})")
