"""``orch alerts``, ``orch silence``, ``orch maintenance`` and ``orch monitor``: alerts, what suppresses them,
targets, healing runs and the guide's memory monitor. Heavy imports stay inside the commands."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orch.cli.common import ConfigOption, cli_owner, fail, load, print_json

alerts_app = typer.Typer(help="Alerts raised by the monitoring sweep.", no_args_is_help=True)
silence_app = typer.Typer(help="Silence some alerts of some targets for a while (no notification, no healing).",
                          no_args_is_help=True)
maintenance_app = typer.Typer(help="Maintenance windows (every alert of the targets suppressed, healing too) and "
                                   "maintenance mode (API changes refused everywhere).", no_args_is_help=True)
monitor_app = typer.Typer(help="Targets, healing runs and the memory monitor.", no_args_is_help=True)


StateOption = Annotated[str | None, typer.Option(help="pending, firing, flapping, resolved or inactive.")]


@alerts_app.command("list")
def alerts_list(state: StateOption = None,
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                config: ConfigOption = None) -> None:
    """Alerts, most recently changed first."""
    from orch.monitoring.alerts import STATES, list_alerts

    if state and state not in STATES:
        fail(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    found = list_alerts(load(config), state=state)
    if as_json:
        print_json(found)
        return
    for alert in found:
        number = "-" if alert["id"] is None else alert["id"]  # the corruption alert lives in the marker
        typer.echo(f"{number:>5}  {alert['state']:<9} {alert['severity']:<8} {alert['alert_name']:<22} "
                   f"{alert['target']:<20} {alert['summary']}")
    if not found:
        typer.echo("no alerts")


@alerts_app.command("events")
def alerts_events(after: Annotated[int, typer.Option(help="Only events with a larger id.")] = 0,
                  config: ConfigOption = None) -> None:
    """Alert state changes in order, as JSON lines (what the API's stream sends)."""
    from orch.monitoring.alerts import events_after

    for event in events_after(load(config), after):
        typer.echo(json.dumps(event, default=str))


def _add(kind: str, target: str, duration: str, reason: str, alert: str, config: str | None) -> None:
    from orch.monitoring import silences

    created = silences.create(load(config), kind=kind, target=target, alert_name=alert, reason=reason,
                              duration=silences.parse_duration(duration), actor=cli_owner())
    typer.echo(f"{kind} {created['id']} on {target}" + (f" ({alert})" if alert != "*" else "")
               + f" until {created['ends_at']}")


def _list(kind: str, include_ended: bool, config: str | None) -> None:
    from orch.monitoring import silences

    found = silences.list_silences(load(config), kind=kind, include_ended=include_ended)
    for row in found:
        typer.echo(f"{row['id']:>5}  {'active' if row['active'] else 'ended/later':<11} {row['target']:<20} "
                   f"{row['alert_name']:<16} until {row['ends_at']}  by {row['created_by']}  {row['reason']}")
    if not found:
        typer.echo(f"no {kind}s")


def _end(silence_id: int, config: str | None) -> None:
    from orch.monitoring import silences

    ended = silences.end(load(config), silence_id, cli_owner())
    typer.echo(f"{ended['kind']} {ended['id']} ended")


Duration = Annotated[str, typer.Option(help="How long: 90s, 15m, 2h, 1d.")]
Reason = Annotated[str, typer.Option(help="Why (kept in the audit trail).")]
AllOption = Annotated[bool, typer.Option("--all", help="Include ended ones.")]


@silence_app.command("add")
def silence_add(target: Annotated[str, typer.Argument(help="Target name or glob (web*, * for all).")],
                duration: Duration = "1h", reason: Reason = "",
                alert: Annotated[str, typer.Option(help="Alert name or glob.")] = "*",
                config: ConfigOption = None) -> None:
    """Silence alerts on matching targets: no notifications and no healing until it ends."""
    _add("silence", target, duration, reason, alert, config)


@silence_app.command("list")
def silence_list(include_ended: AllOption = False, config: ConfigOption = None) -> None:
    """Active and future silences."""
    _list("silence", include_ended, config)


@silence_app.command("end")
def silence_end(silence_id: int, config: ConfigOption = None) -> None:
    """End a silence now."""
    _end(silence_id, config)


@maintenance_app.command("add")
def maintenance_add(target: Annotated[str, typer.Argument(help="Target name or glob (* for all).")],
                    duration: Duration = "1h", reason: Reason = "", config: ConfigOption = None) -> None:
    """Start a maintenance window: every alert on matching targets is suppressed, healing too."""
    _add("maintenance", target, duration, reason, "*", config)


@maintenance_app.command("list")
def maintenance_list(include_ended: AllOption = False, config: ConfigOption = None) -> None:
    """Active and future maintenance windows."""
    _list("maintenance", include_ended, config)


@maintenance_app.command("end")
def maintenance_end(window_id: int, config: ConfigOption = None) -> None:
    """End a maintenance window now."""
    _end(window_id, config)


@monitor_app.command("targets")
def monitor_targets(config: ConfigOption = None) -> None:
    """Run every target's health check now and print the result and its healing plan."""
    from orch.monitoring.target_checks import check_health
    from orch.monitoring.targets import configured_targets, healing_plan

    settings = load(config)
    for target in configured_targets(settings):
        health = check_health(settings, target)
        verdict = {True: "healthy", False: "UNHEALTHY", None: "unknown"}[health.healthy]
        typer.echo(f"{target.name:<20} {verdict:<9} {health.detail}  "
                   f"[heal: {', '.join(healing_plan(settings, target)) or 'none'}]")


@monitor_app.command("heals")
def monitor_heals(target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
                  config: ConfigOption = None) -> None:
    """Self-healing runs, newest first, with every step (JSON)."""
    from orch.monitoring.healing import list_runs

    print_json(list_runs(load(config), target))


@monitor_app.command("mem")
def monitor_mem(pid: Annotated[list[int] | None, typer.Option("--pid", help="Also this process; repeatable.")] = None,
                threshold: Annotated[float, typer.Option(help="Memory percent above which to act.")] = 80.0,
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                config: ConfigOption = None) -> None:
    """The guide's memory monitor: RSS, VMS and memory percent of ORCH's processes, GC statistics, and a
    garbage collection when above the threshold (only a process can collect its own garbage: for the
    API and worker above it, restart them, e.g. `orch monitor` healing does)."""
    from orch.monitoring.memory import memory_report

    report = memory_report(load(config), extra_pids=pid or [], threshold=threshold)
    if as_json:
        print_json(report)
        return
    for proc in report["processes"]:
        if "error" in proc:
            typer.echo(f"{proc['name']} (pid {proc['pid']}): {proc['error']}")
            continue
        typer.echo(f"{proc['name']} (pid {proc['pid']}): RSS Memory: {proc['rss_mb']:.2f} MB, "
                   f"VMS Memory: {proc['vms_mb']:.2f} MB, Memory Percent: {proc['memory_percent']:.2f}%"
                   + ("  HIGH" if proc["high"] else ""))
    typer.echo(f"GC stats: {report['gc_stats']}")
    if report["collected"] is not None:
        typer.echo(f"High memory usage detected, forced garbage collection: {report['collected']} objects")


@maintenance_app.command("mode")
def maintenance_mode_command(
        turn: Annotated[str | None, typer.Argument(metavar="[on|off]", help="Turn it on or off; omit to show it.",
                                                   show_default=False)] = None,
        reason: Reason = "", as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        config: ConfigOption = None) -> None:
    """Maintenance mode, on every API replica and worker within a second: API changes answer 503, self-healing
    pauses, notifications say so; queued tasks still run. Audited."""
    from orch import maintenance_mode

    if turn not in (None, "on", "off"):
        fail(f"expected on or off, got {turn!r}")
    settings = load(config)
    current = (maintenance_mode.state(settings) if turn is None
               else maintenance_mode.set_mode(settings, turn == "on", cli_owner(), reason))
    if as_json:
        print_json(current)
    elif current["on"]:
        typer.echo(f"maintenance mode is on: {maintenance_mode.describe(current)}")
    else:
        typer.echo("maintenance mode is off" + (f" (turned off by {current['by']} at {current['since']})"
                                                 if current["by"] else ""))
