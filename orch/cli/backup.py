"""``orch backup`` and ``orch recover``: the same code the flows run, from a shell.

They need no Prefect server, because recovery is exactly when it may be down; the flows are what the
schedules and the Prefect UI run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from orch.cli.common import ConfigOption, fail, load, print_json

backup_app = typer.Typer(help="Create, list, verify, restore and prune verified backups.", no_args_is_help=True)
recover_app = typer.Typer(help="Service recovery (--emergency: emergency recovery); tasks-from-logs rebuilds "
                          "lost tasks from the JSON logs.", invoke_without_command=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@backup_app.command("create")
def backup_create(kind: Annotated[str, typer.Option(help="manual, daily or full (full adds the Prefect "
                                                   "database, config without secrets and SBOM evidence).")] = "manual",
                  as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Back up the database now; it is cataloged only once verified."""
    settings = load(config)
    from orch.backup.create import create_backup

    entry = create_backup(settings, kind)
    if as_json:
        print_json(entry)
        return
    typer.echo(f"backup {entry['file']}: verified ({entry['integrity']}, "
               f"{entry['validation']['evaluated']} expectations), {entry['size_bytes']} bytes, "
               f"sha256 {entry['sha256']}")


@backup_app.command("list")
def backup_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The catalog, oldest first, each with its verification (verified when / FAILED when: why / never
    verified); backup files the catalog does not know are listed last."""
    settings = load(config)
    from orch.backup.catalog import Catalog, verification_status
    from orch.backup.files import backup_dir

    directory = backup_dir(settings)
    catalog = Catalog(directory)
    entries = [{**entry, "verification": verification_status(entry)} for entry in catalog.entries()]
    strangers = catalog.uncataloged()
    if as_json:
        print_json(entries + [{"file": name, "verification": verification_status(None)} for name in strangers])
        return
    if not entries and not strangers:
        typer.echo(f"no backups in {directory}")
        return
    for entry in entries:
        present = "" if (directory / entry["file"]).exists() else "  (file missing)"
        typer.echo(f"{entry['created_at'][:19]}  {entry['kind']:<6} {entry['engine']:<10} "
                   f"{entry['size_bytes']:>12} B  tasks {entry['row_counts'].get('tasks', 0):>9}  "
                   f"{entry['file']}{present}  {entry['verification']}")
    for name in strangers:
        typer.echo(f"{'?':<19}  {'?':<6} {'?':<10} {'?':>12} B  tasks {'?':>9}  {name}  {verification_status(None)}")


@backup_app.command("verify")
def backup_verify(backup: Annotated[str, typer.Argument(help="A backup file, its catalog name, or 'latest'.")],
                  config: ConfigOption = None) -> None:
    """Checksum, decompress, integrity check and data-quality suite, without restoring anything."""
    settings = load(config)
    from orch.backup.restore import check, discard

    candidate = check(settings, backup)
    discard(candidate)
    typer.echo(f"{backup}: verified - " + "; ".join(candidate.steps))


@backup_app.command("restore")
def backup_restore(backup: Annotated[str, typer.Argument(help="A backup file, its catalog name, or 'latest' "
                                                         "(the newest that verifies; newer ones that do not "
                                                         "are skipped, each with the reason).")],
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed "
                                                     "without a terminal).")] = False,
                   config: ConfigOption = None) -> None:
    """Replace the database with a verified backup (the current one is kept as a pre-restore copy).

    The backup is checked first; then, unless ``--yes``, the command says what will be replaced and
    where the current database will be kept, and asks. Without a terminal to ask on it refuses."""
    import sys

    if not yes and not sys.stdin.isatty():
        fail("restore replaces the live database and there is no terminal to confirm on: pass --yes")
    settings = load(config)
    from orch.backup.restore import check, discard, swap
    from orch.storage.engine import safe_url

    candidate = check(settings, backup, migrate=True)
    try:
        if not yes:
            for line in candidate.skipped:
                typer.echo(line)
            counts = ", ".join(f"{table} {n}" for table, n in sorted(candidate.facts["row_counts"].items()))
            typer.echo(f"This replaces the live database {safe_url(settings.database.url or '')} with "
                       f"{Path(candidate.source).name} ({counts}).\n"
                       f"The current database will be kept as {candidate.pre_restore}")
            if not typer.confirm("Restore?", default=False):
                fail("restore cancelled: nothing was changed")
        report = swap(settings, candidate, owner="restore:cli")
    finally:
        discard(candidate)
    for step in report["steps"]:
        typer.echo(f"- {step}")
    typer.echo(f"restored {report['restored']} into {report['database']} in {report['seconds']} s")


@backup_app.command("prune")
def backup_prune(dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; delete nothing.")]
                 = False, config: ConfigOption = None) -> None:
    """Remove backups past backup.retention_days, always keeping the newest backup.keep_last verified."""
    settings = load(config)
    from orch.backup.retention import prune

    result = prune(settings, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for item in result["remove"]:
        typer.echo(f"{verb} {item['file']} ({item['reason']})")
    typer.echo(f"{verb} {len(result['remove'])}, kept {len(result['keep'])}")


@recover_app.callback()
def recover(ctx: typer.Context,
            emergency: Annotated[bool, typer.Option("--emergency", help="Also free disk space when it is "
                                                    "low (old rotated logs, backups past retention).")] = False,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (each step, what it would "
                                                  "change) and change nothing.")] = False,
            config: ConfigOption = None) -> None:
    """Service recovery: restore the newest verified backup if the database is corrupt, clear stale locks,
    re-queue failed tasks, check health, notify. Exit 1 when a step failed (with --dry-run: would fail)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load(config)
    from orch.recovery.procedures import run

    result = run(settings, "emergency-recovery" if emergency else "service-recovery", dry_run=dry_run)
    for report in result["steps"]:
        typer.echo(f"{'ok  ' if report['ok'] else 'FAIL'} {report['step']}: found {report['found']}; "
                   f"{'plan:' if dry_run else 'did'} {report['did']}")
    if not result["ok"] and dry_run:
        failed = ", ".join(report["step"] for report in result["steps"] if not report["ok"])
        fail(f"{result['procedure']} dry run: {failed} not ok (nothing was changed)")
    if not result["ok"]:
        fail(f"{result['procedure']} failed: manual intervention required")
    typer.echo(f"{result['procedure']} plan printed; nothing was changed (run without --dry-run to act)"
               if dry_run else f"{result['procedure']} completed")


@recover_app.command("tasks-from-logs")
def recover_tasks_from_logs(
        apply: Annotated[bool, typer.Option("--apply", help="Insert the tasks missing from the database.")] = False,
        log: Annotated[Optional[list[str]], typer.Option("--log", help="Log file to read (repeatable; "
                                                          "default: the audit trail, the API log and "
                                                          "data/logs/*.log).")] = None,
        config: ConfigOption = None) -> None:
    """Rebuild tasks from the audit trail's task.create entries (with their params, masked values masked)
    and the task.* log lines into data/recovered_tasks_<time>.json. A task whose params were masked is
    inserted cancelled, marked metadata.recovered_params_masked: dispatch it again with the real values."""
    settings = load(config)
    from pathlib import Path

    from orch.recovery.from_logs import recover as recover_tasks

    if log:
        missing = [path for path in log if not Path(path).is_file()]
        if missing:
            fail(f"log file not found: {', '.join(missing)}")
    result = recover_tasks(settings, apply=apply, log_files=[Path(p) for p in log] if log else None)
    typer.echo(f"found {result['found']} task(s) in {len(result['logs'])} log file(s), {result['missing']} missing "
               f"from the database; written to {result['file']}")
    if result["params_masked"]:
        typer.echo(f"{result['params_masked']} missing task(s) had masked params: inserted as cancelled, "
                   "to be dispatched again with the real values" if apply else
                   f"{result['params_masked']} missing task(s) have masked params (they would be inserted cancelled)")
    typer.echo(f"inserted {result['inserted']}" if apply else "nothing inserted (use --apply)")
