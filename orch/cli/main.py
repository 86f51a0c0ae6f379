"""The ``orch`` command line: the root app, which names every command and command group and where it lives.

Each group is a module of this package, imported only when one of its commands runs (``orch --help`` lists
them from the summaries below), and every command imports what it needs inside its body: ``orch --help``
stays well under a second. Errors a user can cause end in one line on stderr naming the cause, and a
non-zero exit.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orch import __version__
from orch.cli.lazy import Lazy, LazyGroup
from orch.errors import OrchError


class OrchGroup(LazyGroup):
    """``orch``'s subcommands, in the order ``orch --help`` lists them; each summary is the first paragraph
    of the command's own help."""

    subcommands = {
        "scan": Lazy("orch.cli.supply_chain:scan", "Run the security scan, write the report to "
                     "supply_chain.reports_dir; exit 1 when a scanner failed."),
        "up": Lazy("orch.cli.stack:up", "Run the whole local stack: Prefect server, worker, deployments and the "
                   "ORCH API."),
        "doctor": Lazy("orch.cli.stack:doctor", "Print a JSON health verdict (config, database, Prefect, disk); "
                       "exit 0 only when ok."),
        "dispatch": Lazy("orch.cli.dispatch:dispatch_task", "Queue a task for a core and print it (with --wait, "
                         "its final state)."),
        "locks": Lazy("orch.cli.locks:locks_app", "Inspect and release resource locks."),
        "config": Lazy("orch.cli.config:config_app", "Check configuration files."),
        "db": Lazy("orch.cli.db:db_app", "Create, upgrade and check the ORCH database."),
        "tasks": Lazy("orch.cli.tasks:tasks_app", "Inspect and manage dispatched tasks."),
        "cores": Lazy("orch.cli.cores:cores_app", "Manage worker cores."),
        "user": Lazy("orch.cli.users:user_app", "Manage API users."),
        "logs": Lazy("orch.cli.analysis:logs_app", "Analyse ORCH's JSON logs (the guide's log analysis)."),
        "perf": Lazy("orch.cli.analysis:perf_app", "Response times per endpoint from the API's access log lines."),
        "backup": Lazy("orch.cli.backup:backup_app", "Create, list, verify, restore and prune verified backups."),
        "recover": Lazy("orch.cli.backup:recover_app", "Service recovery (--emergency: emergency recovery); "
                        "tasks-from-logs rebuilds lost tasks from the JSON logs."),
        "sbom": Lazy("orch.cli.supply_chain:sbom_app", "Generate, sign and verify the CycloneDX SBOM."),
        "alerts": Lazy("orch.cli.monitoring:alerts_app", "Alerts raised by the monitoring sweep."),
        "silence": Lazy("orch.cli.monitoring:silence_app", "Silence some alerts of some targets for a while (no "
                        "notification, no healing)."),
        "maintenance": Lazy("orch.cli.monitoring:maintenance_app", "Maintenance windows (every alert of the targets "
                            "suppressed, healing too) and maintenance mode (API changes refused everywhere)."),
        "monitor": Lazy("orch.cli.monitoring:monitor_app", "Targets, healing runs and the memory monitor."),
    }

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; an error the user can cause and fix (an ``OrchError``: bad input, a missing
        database, a port in use; a database whose schema is missing or behind this code) ends in one
        line on stderr and exit 1, anything else is a bug and keeps its traceback."""
        from orch.cli.common import fail, schema_problem

        try:
            return super().invoke(ctx)
        except OrchError as exc:
            fail(str(exc))
        except Exception as exc:
            problem = schema_problem(exc)
            if problem is None:
                raise
            fail(problem)


app = typer.Typer(name="orch", help="ORCH-Next: operations orchestrator on Prefect.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, cls=OrchGroup)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch-next {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """ORCH-Next: task dispatch to worker cores, monitoring, self-healing and backups on Prefect."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
