"""``orch logs analyze`` and ``orch perf report``: the guide's log and performance analysis.

Both read this installation's JSON logs (paths from the configuration unless given), print a text
report or ``--json``, and exit 1 with one line when none of the logs exists.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orch.cli.common import ConfigOption, load

logs_app = typer.Typer(help="Analyse ORCH's JSON logs (the guide's log analysis).", no_args_is_help=True)
perf_app = typer.Typer(help="Response times per endpoint from the API's access log lines.", no_args_is_help=True)

LogOption = Annotated[list[str] | None, typer.Option(
    "--log", help="A JSON log to read (rotated copies too; '-' = stdin); repeatable. "
                  "Default: logging.file and <data_dir>/logs/worker.log.", show_default=False)]
SinceOption = Annotated[str | None, typer.Option(
    help="Only lines logged since: 30m, 24h, 7d, 2w or an ISO-8601 time. Default: whole files.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
TopOption = Annotated[int, typer.Option("--top", min=1, max=1000, help="Rows per list.")]


@logs_app.command("analyze")
def logs_analyze(
    log: LogOption = None,
    audit_log: Annotated[list[str] | None, typer.Option(
        "--audit-log", help="Audit log (JSON lines); repeatable. Default: logging.audit_file.",
        show_default=False)] = None,
    since: SinceOption = None,
    slow_ms: Annotated[float | None, typer.Option(
        help="Slow-request threshold in ms. Default: monitoring.alert_thresholds.response_time_ms (2000).",
        show_default=False)] = None,
    limit: TopOption = 10,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Error frequency, slow requests, authentication failures and task failure patterns."""
    settings = load(config, generate_secrets=False)
    from orch.analysis.jsonlogs import parse_since
    from orch.analysis.logs import analyze_logs
    from orch.analysis.render import logs_text
    from orch.analysis.sources import default_audit_paths, default_log_paths

    report = analyze_logs(
        log or default_log_paths(settings), audit_log or default_audit_paths(settings),
        since=parse_since(since) if since else None, limit=limit,
        slow_ms=settings.monitoring.alert_thresholds.response_time_ms if slow_ms is None else slow_ms)
    typer.echo(json.dumps(report, indent=2) if as_json else logs_text(report))


@perf_app.command("report")
def perf_report(
    log: LogOption = None,
    since: SinceOption = None,
    limit: TopOption = 10,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Requests, average, p95 and maximum response time per endpoint, slowest first; top errors."""
    settings = load(config, generate_secrets=False)
    from orch.analysis.jsonlogs import parse_since
    from orch.analysis.performance import performance_report
    from orch.analysis.render import perf_text
    from orch.analysis.sources import default_log_paths

    report = performance_report(log or default_log_paths(settings)[:1],
                                since=parse_since(since) if since else None, limit=limit)
    typer.echo(json.dumps(report, indent=2) if as_json else perf_text(report))
