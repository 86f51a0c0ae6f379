"""Alert rules and states on recorded samples: thresholds with "for", EWMA, target health, the state
machine (pending -> firing -> resolved, de-duplication, reminders, flapping), silences and windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orch.config.loader import load_settings
from orch.config.schema import Settings
from orch.monitoring import alerts, healing, rules, silences
from orch.monitoring.samples import Sample, store
from orch.storage.migrate import upgrade

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_settings(isolated_env) -> Settings:  # type: ignore[no-untyped-def]
    loaded = load_settings(environ={"ORCH_HOME": ".", "DATABASE_URL": f"sqlite:///{isolated_env}/data/orch.db"},
                           generate_secrets=False)
    loaded.monitoring.interval = 10
    loaded.monitoring.alerting.for_seconds = 30
    upgrade(loaded.database, create_database=True)
    return loaded


def record(settings: Settings, metric: str, values: list[float], subject: str | None = None, start: datetime = T0,
           step: float = 10) -> datetime:
    """One sample per ``step`` seconds from ``start`` (about this host unless ``subject``); returns the time of
    the last one."""
    subject = subject or settings.monitoring.host_name
    stamp = start
    for value in values:
        store(settings, [Sample(metric, value, subject)], at=stamp)
        stamp += timedelta(seconds=step)
    return stamp - timedelta(seconds=step)


def observe(settings: Settings, name: str, now: datetime, targets: list[str] | None = None) -> rules.Observation:
    found = [o for o in rules.evaluate(settings, targets or [], now) if o.alert_name == name]
    assert len(found) == 1, found
    return found[0]


def test_threshold_fires_only_after_its_for_duration(settings: Settings) -> None:
    settings.monitoring.interval = 10
    settings.monitoring.alerting.for_seconds = 30
    last = record(settings, "cpu_percent", [50, 85, 90, 95])  # crossed at T0+10
    pending = observe(settings, "cpu_high", last)
    assert (pending.state, pending.value, pending.threshold) == ("pending", 95, 80)
    assert pending.since == T0 + timedelta(seconds=10)
    last = record(settings, "cpu_percent", [97], start=last + timedelta(seconds=10))  # 30 s above
    firing = observe(settings, "cpu_high", last)
    host = settings.monitoring.host_name
    assert firing.state == "firing" and f"cpu_percent 97% > 80% on {host} for 30 s" in firing.summary
    last = record(settings, "cpu_percent", [40], start=last + timedelta(seconds=10))
    assert observe(settings, "cpu_high", last).state == "ok"


def test_every_guide_threshold_and_a_down_target(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.alerting.for_seconds = 0
    settings.monitoring.host_name = host = "web-1"
    store(settings, [Sample("memory_percent", 86, host), Sample("disk_usage_percent", 91, "web-1:/"),
                     Sample("api_response_time_ms", 2500, host), Sample("api_error_rate_percent", 6, host),
                     Sample("target_up", 0, "web"), Sample("target_up", 1, "db"), Sample("cpu_percent", 79, host),
                     Sample("cpu_percent", 99, "web-2")], at=T0)  # another host's: judged by that host's sweep
    found = {(o.alert_name, o.target): o for o in rules.evaluate(settings, ["web", "db"], T0)}
    assert {key for key, o in found.items() if o.state == "firing"} == {
        ("memory_high", host), ("disk_full", "web-1:/"), ("api_slow", host), ("api_errors", host),
        ("target_down", "web")}
    assert found[("target_down", "web")].heal and found[("cpu_high", host)].state == "ok"


def test_ewma_flags_a_jump_the_fixed_threshold_misses(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.alerting.ewma_min_samples = 10
    steady = [20.0 + (i % 3) for i in range(15)]
    last = record(settings, "cpu_percent", steady)
    assert observe(settings, "cpu_percent_anomaly", last).state == "ok"
    last = record(settings, "cpu_percent", [60.0], start=last + timedelta(seconds=10))
    jump = observe(settings, "cpu_percent_anomaly", last)
    assert jump.state == "firing" and jump.value == 60.0 and jump.threshold < 60
    assert observe(settings, "cpu_high", last).state != "firing"  # 60 % is under the 80 % threshold
    mean, deviation = rules.ewma([10, 10, 10, 10], 0.3)
    assert (mean, deviation) == (10, 0)


def obs(state: str, name: str = "target_down", target: str = "web", heal: bool = True) -> rules.Observation:
    return rules.Observation(name, target, state, "critical", f"{name} {state}", 0.0, 1.0, heal=heal)


def test_states_move_once_are_deduplicated_and_remind(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.alerting.repeat_interval = 600
    assert alerts.apply(settings, [obs("ok")], T0) == []  # nothing ever wrong: no row
    assert alerts.apply(settings, [obs("pending")], T0) == []
    (fired,) = alerts.apply(settings, [obs("firing")], T0 + timedelta(seconds=10))
    assert (fired.kind, fired.heal, fired.alert["state"]) == ("firing", True, "firing")
    assert alerts.apply(settings, [obs("firing")], T0 + timedelta(seconds=20)) == []  # de-duplicated
    (reminder,) = alerts.apply(settings, [obs("firing")], T0 + timedelta(seconds=620))
    assert reminder.kind == "reminder" and not reminder.heal
    (resolved,) = alerts.apply(settings, [obs("ok")], T0 + timedelta(seconds=630))
    assert resolved.kind == "resolved"
    assert [e["state"] for e in alerts.events_after(settings)] == ["pending", "firing", "resolved"]
    first = alerts.events_after(settings)[0]["id"]
    assert [e["state"] for e in alerts.events_after(settings, first)] == ["firing", "resolved"]
    alerts.apply(settings, [obs("pending")], T0 + timedelta(seconds=700))
    assert alerts.apply(settings, [obs("ok")], T0 + timedelta(seconds=710)) == []  # a pending that clears is quiet
    assert alerts.list_alerts(settings)[0]["state"] == "inactive"


def test_a_flapping_alert_is_held_instead_of_paging_every_sweep(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.alerting.flap_threshold = 4
    settings.monitoring.alerting.flap_window = 300
    kinds = []
    for i, state in enumerate(["firing", "ok", "firing", "ok", "firing", "ok", "firing", "ok"]):
        kinds += [n.kind for n in alerts.apply(settings, [obs(state)], T0 + timedelta(seconds=10 * i))]
    assert kinds == ["firing", "resolved", "firing", "flapping"]  # then silence while it flaps
    assert alerts.list_alerts(settings)[0]["state"] == "flapping"
    # Settles: the condition stays good past the window, so the held alert resolves, once.
    later = [n.kind for n in alerts.apply(settings, [obs("ok")], T0 + timedelta(seconds=500))]
    assert later == ["resolved"]


def test_silences_and_maintenance_windows_suppress_matching_alerts_until_they_end(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    silence = silences.create(settings, kind="silence", target="web*", alert_name="target_down",
                              duration=timedelta(hours=1), actor="cli:test", reason="deploy")
    window = silences.create(settings, kind="maintenance", target="db", duration=timedelta(hours=1),
                             actor="cli:test")
    now = datetime.now(UTC)
    notices = alerts.apply(settings, [obs("firing", target="web01"), obs("firing", name="cpu_high", target="web01"),
                                      obs("firing", name="disk_full", target="db"), obs("firing", target="api")], now)
    assert sorted((n.alert["alert_name"], n.alert["target"]) for n in notices) == [
        ("cpu_high", "web01"), ("target_down", "api")]
    silences.end(settings, silence["id"], "cli:test")
    later = alerts.apply(settings, [obs("firing", target="web01")], now + timedelta(seconds=10))
    assert [(n.kind, n.heal, n.alert["target"]) for n in later] == [("firing", True, "web01")]  # said and healed now
    assert [s["id"] for s in silences.list_silences(settings)] == [window["id"]]
    with pytest.raises(silences.SilenceError, match="covers every alert"):
        silences.create(settings, kind="maintenance", target="db", alert_name="cpu_high",
                        duration=timedelta(hours=1), actor="x")
    with pytest.raises(silences.SilenceError, match="duration"):
        silences.create(settings, kind="silence", target="db", duration=timedelta(0), actor="x")
    assert silences.parse_duration("15m") == timedelta(minutes=15)


def obs_at(state: str, latest_at: datetime, target: str = "web") -> rules.Observation:
    """A target_down observation whose newest sample was taken at ``latest_at``."""
    return rules.Observation("target_down", target, state, "critical", f"target_down {state}", 0.0, 1.0, heal=True,
                             latest_at=latest_at)


def heal(settings: Settings, target: str = "web") -> str:
    """What the self-heal flow records for one run: the gate's decision, or a run that acts and heals."""
    gate = healing.gate(settings, target, "target_down")
    if not gate.allowed:
        healing.start_run(settings, target, "target_down", None, gate.outcome, gate.reason)
        return gate.outcome
    healing.finish_run(settings, healing.start_run(settings, target, "target_down", None), "healed")
    return "healed"


def only_alert(settings: Settings) -> dict:  # type: ignore[type-arg]
    (alert,) = alerts.list_alerts(settings)
    return alert


def test_a_target_down_again_after_its_heal_is_healed_again(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.self_healing.max_runs_per_hour = 2
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now)], now)
    assert fired.heal and (only_alert(settings)["heal_state"], only_alert(settings)["heals"]) == ("requested", 1)
    assert alerts.apply(settings, [obs_at("firing", now)], now) == []  # the heal is on its way: not twice
    assert heal(settings) == "healed"
    healed_at = datetime.fromisoformat(only_alert(settings)["heal_at"])
    # A sweep that measured before the heal ended says nothing new about the target.
    assert alerts.apply(settings, [obs_at("firing", healed_at - timedelta(seconds=1))], healed_at) == []
    # Down again, measured after the heal, and no sweep saw it well in between: heal again.
    later = healed_at + timedelta(milliseconds=1)
    (again,) = alerts.apply(settings, [obs_at("firing", later)], later)
    assert (again.kind, again.heal) == ("firing", True)
    assert (only_alert(settings)["heal_state"], only_alert(settings)["heals"]) == ("requested", 2)
    assert heal(settings) == "healed"
    # The third time the circuit breaker (2 an hour) refuses, says so, and the alert stops asking.
    third = datetime.fromisoformat(only_alert(settings)["heal_at"]) + timedelta(milliseconds=1)
    (asked,) = alerts.apply(settings, [obs_at("firing", third)], third)
    assert asked.heal and heal(settings) == "circuit_open"
    fourth = datetime.fromisoformat(only_alert(settings)["heal_at"]) + timedelta(seconds=10)
    assert alerts.apply(settings, [obs_at("firing", fourth)], fourth) == []
    assert only_alert(settings)["heal_state"] == "circuit_open"
    # Resolved, then firing again: a new firing with heals of its own.
    alerts.apply(settings, [obs_at("ok", fourth)], fourth)
    (new,) = alerts.apply(settings, [obs_at("firing", fourth)], fourth + timedelta(seconds=1))
    assert new.heal and only_alert(settings)["heals"] == 1


def test_a_heal_skipped_by_a_silence_runs_when_the_silence_ends(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now)], now)
    assert fired.heal
    silence = silences.create(settings, kind="silence", target="web", alert_name="target_down",
                              duration=timedelta(hours=1), actor="cli:test", reason="looking at it")
    assert heal(settings) == "skipped"  # the silence came between the alert and its heal run
    assert alerts.apply(settings, [obs_at("firing", now)], datetime.now(UTC)) == []  # still silenced
    silences.end(settings, silence["id"], "cli:test")
    (handed,) = alerts.apply(settings, [obs_at("firing", now)], datetime.now(UTC))
    assert (handed.kind, handed.heal) == ("firing", True) and only_alert(settings)["heals"] == 2


def test_a_heal_skipped_because_healing_is_off_is_not_asked_every_sweep(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    settings.monitoring.self_healing.enabled = False
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now)], now)
    assert fired.heal and heal(settings) == "skipped"
    assert alerts.apply(settings, [obs_at("firing", now)], datetime.now(UTC)) == []
    settings.monitoring.self_healing.enabled = True  # switched on (config reloaded): the alert is healed now
    (handed,) = alerts.apply(settings, [obs_at("firing", now)], datetime.now(UTC))
    assert handed.heal


def test_a_heal_the_sweep_could_not_request_is_asked_again_at_the_next_sweep(sqlite_settings: Settings) -> None:
    """Prefect refused to create the heal run (busy, away): the alert must not stay firing unhealed."""
    settings = sqlite_settings
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now)], now)
    assert fired.heal and only_alert(settings)["heals"] == 1
    assert alerts.apply(settings, [obs_at("firing", now)], now + timedelta(seconds=1)) == []  # requested: wait
    alerts.heal_not_requested(settings, "web", "target_down", now + timedelta(seconds=2))
    assert (only_alert(settings)["heal_state"], only_alert(settings)["heals"]) == ("unrequested", 0)
    (again,) = alerts.apply(settings, [obs_at("firing", now)], now + timedelta(seconds=3))
    assert (again.kind, again.heal) == ("firing", True) and only_alert(settings)["heals"] == 1


def test_overlapping_sweeps_make_a_new_alert_once_on_postgresql(pg_url: str, isolated_env) -> None:  # type: ignore[no-untyped-def]
    """Two sweeps that overlap (the scheduled one and an operator's) both found no row for a new alert and
    both inserted one: on PostgreSQL the second failed on the unique key, and its sweep with it. (On SQLite
    the write turn already makes the second wait for the first's commit.) The first sweep is held at its
    insert until the second is seen waiting for a lock in PostgreSQL, then let go: the second now moves
    the row the first made."""
    import threading

    from sqlalchemy import event, text
    from support import wait_until

    from orch.storage.engine import get_engine, session_scope

    settings = load_settings(environ={"ORCH_HOME": ".", "DATABASE_URL": pg_url}, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    engine = get_engine(settings.database)
    held, go = threading.Event(), threading.Event()

    def hold_the_first_insert(_conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "first" and statement.lstrip().startswith("INSERT INTO alerts"):
            held.set()
            go.wait(60)

    answers: dict[str, object] = {}

    def sweep(at: datetime) -> None:
        try:
            answers[threading.current_thread().name] = alerts.apply(settings, [obs("firing")], at)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answers[threading.current_thread().name] = exc

    def waiting_for_a_lock() -> bool:
        with session_scope(settings.database) as session:
            return bool(session.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                             "current_database() AND wait_event_type = 'Lock'")).scalar_one())

    event.listen(engine, "after_cursor_execute", hold_the_first_insert)
    first = threading.Thread(target=sweep, args=(T0,), name="first")
    second = threading.Thread(target=sweep, args=(T0 + timedelta(seconds=1),), name="second")
    try:
        first.start()
        wait_until(held.is_set, 60, "the first sweep's insert")
        second.start()
        wait_until(waiting_for_a_lock, 60, "the second sweep to wait for the first")
    finally:
        go.set()
        first.join(60)
        second.join(60)
        event.remove(engine, "after_cursor_execute", hold_the_first_insert)
    assert [n.kind for n in answers["first"]] == ["firing"], answers  # type: ignore[union-attr]
    assert answers["second"] == [], answers  # the same firing: de-duplicated, not an error
    assert [row["state"] for row in alerts.list_alerts(settings)] == ["firing"]
