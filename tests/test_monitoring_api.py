"""The monitoring API: alerts and their events by id, silences and windows (who may), targets, heals."""

from __future__ import annotations

from typing import Any

from api_fixtures import Api

from orch.monitoring import alerts, healing
from orch.monitoring.rules import Observation


def test_alerts_silences_targets_and_heals(api: Api) -> None:
    settings = api.settings
    alerts.apply(settings, [Observation("target_down", "orch-api", "firing", "critical", "down", 0, 1, heal=True)])
    healing.finish_run(settings, healing.start_run(settings, "orch-api", "target_down", None), "healed")

    (alert,) = api.client.get("/alerts", headers=api.headers("viewer")).json()["items"]
    assert (alert["alert_name"], alert["state"], alert["value"]) == ("target_down", "firing", 0.0)
    assert api.client.get("/alerts?state=firing", headers=api.headers("viewer")).json()["items"] == [alert]
    events = api.client.get("/alerts/events?after=0", headers=api.headers("viewer")).json()["items"]
    assert [e["state"] for e in events] == ["firing"]
    assert api.client.get(f"/alerts/events?after={events[-1]['id']}", headers=api.headers("viewer")).json() == {
        "items": []}
    assert api.client.get("/alerts").status_code == 401

    body: dict[str, Any] = {"target": "orch-*", "alert_name": "target_down", "duration_seconds": 600,
                            "reason": "planned restart"}
    assert api.client.post("/silences", json=body, headers=api.headers("viewer")).status_code == 403
    created = api.client.post("/silences", json=body, headers=api.headers("operator"))
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["active"] and silence["created_by"] == "oscar"
    window = api.client.post("/silences", json={"kind": "maintenance", "target": "db", "duration_seconds": 60},
                             headers=api.headers("admin")).json()
    listed = api.client.get("/silences", headers=api.headers("viewer")).json()["items"]
    assert [item["id"] for item in listed] == [window["id"], silence["id"]]
    bad = api.client.post("/silences", json={**body, "kind": "maintenance"}, headers=api.headers("operator"))
    assert bad.status_code == 422 and "covers every alert" in bad.text
    assert api.client.post("/silences", json={**body, "duration_seconds": 0},
                           headers=api.headers("operator")).status_code == 422
    ended = api.client.delete(f"/silences/{silence['id']}", headers=api.headers("operator"))
    assert ended.status_code == 200 and ended.json()["active"] is False
    assert api.client.delete("/silences/999", headers=api.headers("operator")).status_code == 404

    targets = api.client.get("/targets", headers=api.headers("viewer")).json()["items"]
    assert {t["name"]: (t["health_check"], t["healing_plan"]) for t in targets} == {
        "orch-api": ("url", ["restart"]), "orch-worker": ("supervised", ["restart"])}
    (run,) = api.client.get("/heals?target=orch-api", headers=api.headers("viewer")).json()["items"]
    assert run["outcome"] == "healed"

    metrics = api.client.get("/metrics", headers=api.headers("viewer")).text
    assert 'orch_alerts_active{alert_name="target_down",severity="critical",state="firing"} 1.0' in metrics
    assert 'orch_heal_runs_total{outcome="healed"} 1.0' in metrics
