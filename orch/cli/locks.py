"""``orch locks``: the resource locks tasks hold and wait for, and releasing them by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from orch.cli.common import ConfigOption, cli_owner, load, print_json

locks_app = typer.Typer(help="Inspect and release resource locks.", no_args_is_help=True)


@locks_app.command("list")
def locks_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
               config: ConfigOption = None) -> None:
    """Held locks, who waits for them, and wait statistics."""
    from orch.dispatch.locks import LockManager

    entries = LockManager(load(config)).list()
    if as_json:
        print_json(entries)
        return
    for entry in entries:
        held = entry["held"]
        stats = entry["stats"]
        typer.echo(f"{entry['resource']}: " + (f"held by {held['owner']} until {held['expires_at']}" if held
                                                else "free")
                   + f"; {len(entry['waiting'])} waiting; {stats['acquisitions']} acquisitions, "
                   f"avg wait {stats['avg_wait_seconds']} s, max {stats['max_wait_seconds']} s, "
                   f"{stats['timeouts']} timeouts, {stats['expirations']} expired")
    if not entries:
        typer.echo("no locks")


@locks_app.command("release")
def locks_release(resource: str, config: ConfigOption = None) -> None:
    """Force-release a lock whatever holds it (for an operator clearing a stuck holder)."""
    from orch.dispatch.locks import LockManager

    released = LockManager(load(config)).release(resource, actor=cli_owner())
    typer.echo(f"lock {resource} released" if released else f"lock {resource} was not held")


@locks_app.command("cleanup")
def locks_cleanup(config: ConfigOption = None) -> None:
    """Drop locks past their TTL and waiters that stopped waiting (the guide's cleanup_expired_locks)."""
    from orch.dispatch.locks import LockManager

    typer.echo(f"removed {LockManager(load(config)).cleanup_expired()} expired lock(s)")
