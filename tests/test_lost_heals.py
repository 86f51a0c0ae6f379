"""A heal run that ended without acting is asked for again: CI saw the Prefect worker fail to start a heal
run (the server answered 503 to its labels update) and report it Crashed, and the firing target stayed
unhealed, its alert ``requested`` forever. The runs here are real flow runs on the session's Prefect server,
created with the idempotency key the sweep gives a heal run, and moved to the states a worker leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from support import prefect_auth
from test_monitoring_rules import heal, obs_at, only_alert, sqlite_settings  # noqa: F401 (fixture)
from test_prefect_auth import session_prefect

from orch.config.schema import Settings
from orch.monitoring import alerts


def heal_run(prefect_server: str, key: str, state: str, message: str = "") -> str:
    """A flow run made with the heal's idempotency key, in ``state`` (forced, as a worker reports it)."""
    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        flow = prefect.post("/flows/", json={"name": "self-heal"}).raise_for_status().json()
        run = prefect.post("/flow_runs/", json={"flow_id": flow["id"], "idempotency_key": key,
                                                "state": {"type": "SCHEDULED"}}).raise_for_status().json()
        if state != "SCHEDULED":
            prefect.post(f"/flow_runs/{run['id']}/set_state", json={
                "state": {"type": state, "message": message}, "force": True}).raise_for_status()
        return str(run["id"])


def test_a_heal_run_that_never_acted_is_asked_again_up_to_the_breakers_count(sqlite_settings: Settings,  # noqa: F811
                                                                              prefect_server: str) -> None:
    settings = sqlite_settings
    settings.prefect = session_prefect(prefect_server)
    settings.monitoring.self_healing.max_runs_per_hour = 2
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now)], now)
    assert fired.heal
    key = alerts.heal_key(fired.alert)
    run_id = heal_run(prefect_server, key, "SCHEDULED")
    assert alerts.lost_heals(settings, ["web"], now) == []  # on its way: left alone

    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        prefect.post(f"/flow_runs/{run_id}/set_state", json={"state": {
            "type": "CRASHED", "message": "Failed to submit flow run to infrastructure: 503"}, "force": True})
    (lost,) = alerts.lost_heals(settings, ["web"], now + timedelta(seconds=1))
    assert (lost.target, lost.heals, lost.state, lost.again) == ("web", 1, "CRASHED", True)
    assert "Failed to submit" in lost.message
    assert (only_alert(settings)["heal_state"], only_alert(settings)["heals"]) == ("unrequested", 1)
    assert alerts.lost_heals(settings, ["web"], now + timedelta(seconds=1)) == []  # said once

    (again,) = alerts.apply(settings, [obs_at("firing", now)], now + timedelta(seconds=2))
    assert again.heal and only_alert(settings)["heals"] == 2
    assert alerts.heal_key(again.alert) != key  # a new run, not Prefect's answer of the crashed one

    heal_run(prefect_server, alerts.heal_key(again.alert), "CANCELLED")
    (lost,) = alerts.lost_heals(settings, ["web"], now + timedelta(seconds=3))
    assert (lost.heals, lost.state, lost.again) == (2, "CANCELLED", False)  # two lost: a human must look
    assert only_alert(settings)["heal_state"] == "lost"
    assert alerts.apply(settings, [obs_at("firing", now)], now + timedelta(seconds=4)) == []


def test_a_heal_run_that_recorded_its_outcome_is_not_lost(sqlite_settings: Settings,  # noqa: F811
                                                          prefect_server: str) -> None:
    settings = sqlite_settings
    settings.prefect = session_prefect(prefect_server)
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now, target="db")], now)
    heal_run(prefect_server, alerts.heal_key(fired.alert), "COMPLETED")
    assert heal(settings, "db") == "healed"  # the run recorded what it did before it completed
    assert alerts.lost_heals(settings, ["db"], now) == []
    assert only_alert(settings)["heal_state"] == "healed"
    assert alerts.lost_heals(settings, [], now) == []


def test_a_heal_whose_run_was_never_created_is_asked_again_under_the_same_key(sqlite_settings: Settings,  # noqa: F811
                                                                                 prefect_server: str) -> None:
    """The sweep that asked hung before it created the run (CI saw a sweep go silent after its alerts):
    after two intervals the request is given back, and the next one reuses the key, so a late run of the
    stuck sweep and the new request would be one run."""
    settings = sqlite_settings
    settings.prefect = session_prefect(prefect_server)
    now = datetime.now(UTC)
    (fired,) = alerts.apply(settings, [obs_at("firing", now, target="api")], now)
    key = alerts.heal_key(fired.alert)
    asked_at = datetime.fromisoformat(only_alert(settings)["heal_at"])
    wait = alerts.unmade_after(settings)
    assert alerts.lost_heals(settings, ["api"], asked_at + wait - timedelta(seconds=1)) == []  # may still come
    (lost,) = alerts.lost_heals(settings, ["api"], asked_at + wait)
    assert (lost.state, lost.again, lost.heals) == ("NOT CREATED", True, 1)
    assert (only_alert(settings)["heal_state"], only_alert(settings)["heals"]) == ("unrequested", 0)
    (again,) = alerts.apply(settings, [obs_at("firing", now, target="api")], asked_at + wait)
    assert again.heal and alerts.heal_key(again.alert) == key
