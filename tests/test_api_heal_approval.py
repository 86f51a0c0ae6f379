"""Answering a heal's approval through ORCH's API instead of the Prefect UI: a real self-heal flow run on the
real Prefect server pauses, ``GET /heals`` shows it waiting, and ``POST /heals/{id}/approval`` resumes it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import Api, api_for
from receivers import HttpReceiver, http_receiver
from support import free_port, wait_until

from orch.config.schema import Settings


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    with http_receiver() as receiver:
        yield receiver


@pytest.fixture
def heal_api(approval_settings: Callable[..., Settings], slack: HttpReceiver) -> Iterator[Api]:
    """The API on :func:`approval_settings` (a target ``web`` whose ``isolate`` needs approval), whose
    notifications go to ``slack``."""
    with api_for(approval_settings(notifications={"slack": {"webhook_url": slack.url}})) as api:
        yield api


@contextmanager
def healing(target: str = "web") -> Iterator[dict[str, Any]]:
    """The self-heal flow run in a thread (as the in-process worker runs it); yields its result once done."""
    from flows.self_heal import self_heal

    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(self_heal(target=target)), daemon=True)
    runner.start()
    yield outcome  # a failing test leaves the paused daemon thread behind; its approval times out on its own
    runner.join(120)
    assert not runner.is_alive(), "the heal run did not finish"


def waiting_run(api: Api) -> dict[str, Any]:
    """The heal run, once ``GET /heals`` (as a viewer) shows it paused for approval."""
    def paused() -> dict[str, Any] | None:
        response = api.client.get("/heals", headers=api.headers("viewer"))
        assert response.status_code == 200, response.text
        runs = response.json()["items"]
        return runs[0] if runs and runs[0]["awaiting_approval"] else None

    return wait_until(paused, 90, "the heal run to pause for approval", interval=0.3)


def heal_audit(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import AuditRecord

    with session_scope(api.settings.database) as session:
        rows = session.execute(select(AuditRecord.action, AuditRecord.actor, AuditRecord.details)
                               .where(AuditRecord.action.in_(["heal.approve", "heal.deny"])).order_by(AuditRecord.id))
        return [(action, actor, details) for action, actor, details in rows]


def finished(api: Api, run_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        (run,) = [r for r in api.client.get("/heals", headers=api.headers("viewer")).json()["items"]
                  if r["id"] == run_id]
        return run if run["outcome"] != "running" else None

    return wait_until(done, 90, f"heal run {run_id} to finish")


def test_an_admin_approves_a_paused_heal_through_the_api(heal_api: Api, tmp_path: Path, slack: HttpReceiver) -> None:
    api = heal_api
    with healing() as outcome:
        run = waiting_run(api)
        waiting = run["awaiting_approval"]
        assert waiting["action"] == "isolate" and run["flow_run_id"]
        assert waiting["since"] < waiting["timeout_at"]
        assert run["steps"][-1]["state"] == "asked"

        url = f"/heals/{run['id']}/approval"
        denied = api.client.post(url, json={"approve": True, "comment": "sure"}, headers=api.headers("operator"))
        assert denied.status_code == 403, denied.text
        assert api.client.post(url, json={"approve": True, "comment": "x" * 501},
                               headers=api.headers("admin")).status_code == 422
        answered = api.client.post(url, json={"approve": True, "comment": "isolating it, INC-42"},
                                   headers=api.headers("admin"))
        assert answered.status_code == 200, answered.text
        assert answered.json()["id"] == run["id"] and answered.json()["awaiting_approval"] is None

        again = api.client.post(url, json={"approve": True, "comment": "twice"}, headers=api.headers("admin"))
        assert again.status_code == 409 and "not waiting for approval" in again.json()["detail"]

    assert outcome["outcome"] == "healed" and outcome["action"] == "isolate" and (tmp_path / "isolated").exists()
    steps = finished(api, run["id"])["steps"]
    answer = next(s for s in steps if s["step"] == "approval" and "state" not in s)
    assert answer["ok"] is True and answer["detail"] == "approved by alice: isolating it, INC-42"
    assert [s["step"] for s in steps] == ["approval", "approval", "isolate", "health_check"]
    ((action, actor, details),) = heal_audit(api)
    assert (action, actor) == ("heal.approve", "alice")
    assert details["comment"] == "isolating it, INC-42" and details["action"] == "isolate"
    assert "- approval: ok - approved by alice: isolating it, INC-42" in slack.json_bodies()[-1]["text"]


def test_a_refusal_through_the_api_ends_without_the_action(heal_api: Api, tmp_path: Path) -> None:
    api = heal_api
    assert api.client.post("/heals/999999/approval", json={"approve": False},
                           headers=api.headers("admin")).status_code == 404
    with healing() as outcome:
        run = waiting_run(api)
        answered = api.client.post(f"/heals/{run['id']}/approval", json={"approve": False, "comment": "not now"},
                                   headers=api.headers("admin"))
        assert answered.status_code == 200, answered.text

    assert outcome["outcome"] == "failed" and not (tmp_path / "isolated").exists()
    ended = finished(api, run["id"])
    assert ended["awaiting_approval"] is None
    assert [(s["step"], s.get("ok")) for s in ended["steps"]] == [("approval", None), ("approval", False)]
    assert ended["steps"][1]["detail"] == "refused by alice: not now"
    assert [(action, actor) for action, actor, _ in heal_audit(api)] == [("heal.deny", "alice")]
    done = api.client.post(f"/heals/{run['id']}/approval", json={"approve": True}, headers=api.headers("admin"))
    assert done.status_code == 409


def test_an_unreachable_prefect_is_a_503_not_a_lost_answer(api_factory: Any) -> None:
    """A run that asked, with no Prefect server to resume it: listed as not waiting, and answering says why."""
    from orch.monitoring import healing as heal_record

    api = api_factory(PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    run_id = heal_record.start_run(api.settings, "web", "target_down", "0b6f6d64-4e0e-4b8a-9a53-3f0f2b0c9e11")
    heal_record.record_step(api.settings, run_id, {"step": "approval", "state": "asked", "action": "isolate",
                                                   "timeout_at": "2026-01-01T00:00:00+00:00"})
    (run,) = api.client.get("/heals", headers=api.headers("viewer")).json()["items"]
    assert run["awaiting_approval"] is None and run["flow_run_id"] == "0b6f6d64-4e0e-4b8a-9a53-3f0f2b0c9e11"
    answer = api.client.post(f"/heals/{run_id}/approval", json={"approve": True}, headers=api.headers("admin"))
    assert answer.status_code == 503 and "cannot reach Prefect" in answer.json()["detail"]
