"""``orch db``: create, upgrade, check and maintain ORCH's database."""

from __future__ import annotations

import typer

from orch.cli.common import ConfigOption, fail, load, print_json

db_app = typer.Typer(help="Create, upgrade and check the ORCH database.", no_args_is_help=True)


def _safe(url: str) -> str:
    from orch.storage.engine import safe_url

    return safe_url(url)


@db_app.command("maintain")
def db_maintain(config: ConfigOption = None) -> None:
    """Purge what is past retention, then ANALYZE, REINDEX, VACUUM, PRAGMA optimize (VACUUM ANALYZE on PostgreSQL)."""
    settings = load(config)
    from orch.maintenance import maintain

    print_json(maintain(settings))


@db_app.command("init")
def db_init(config: ConfigOption = None) -> None:
    """Create the database (and the PostgreSQL database itself if missing) at the current schema.

    An existing SQLite file is checked first (``PRAGMA quick_check``): ``orch up`` runs this before it
    serves anything, and a damaged file must stop it there, before new work is accepted into it."""
    settings = load(config)
    from orch.storage.engine import DatabaseCorrupt
    from orch.storage.health import check_corruption
    from orch.storage.migrate import upgrade

    problem = check_corruption(settings.database, "orch db init")
    if problem is not None:
        raise DatabaseCorrupt(settings.database.url or "", problem)
    result = upgrade(settings.database, create_database=True)
    state = "created" if result.before is None else (
        "upgraded from " + result.before if result.changed else "already initialised")
    typer.echo(f"{_safe(settings.database.url)}: {state} at schema {result.after}")


@db_app.command("migrate")
def db_migrate(config: ConfigOption = None) -> None:
    """Upgrade the database schema to the version this code expects."""
    settings = load(config)
    from orch.storage.migrate import current_revision, upgrade

    if current_revision(settings.database) is None:
        fail(f"{_safe(settings.database.url)} is not initialised (run: orch db init)")
    result = upgrade(settings.database)
    typer.echo(f"{_safe(settings.database.url)}: "
               + (f"migrated {result.before} -> {result.after}" if result.changed
                  else f"already at {result.after}"))


@db_app.command("check")
def db_check(config: ConfigOption = None) -> None:
    """Integrity check, schema revision and tasks created in the last hour; exit 1 when unhealthy."""
    settings = load(config)
    from orch.storage.health import check_database

    health = check_database(settings.database)
    if not health.healthy:
        fail(health.summary())
    typer.echo(health.summary())
