"""Alerts, their event stream by id, silences and maintenance windows, targets and healing runs.

Reading needs ``system:monitor``; silencing and maintenance windows need ``alert:silence`` (operators and
admins: whoever is on call must be able to stop a page); answering a heal's approval (a destructive action)
needs ``system:admin``. Every change is audited with the caller.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import MAX_ID, errors
from orch.dispatch.request import JsonInt
from orch.monitoring import alerts, healing, silences
from orch.monitoring.targets import configured_targets, healing_plan
from orch.prefect_api import PrefectUnavailable
from orch.security.rbac import Permission

router = APIRouter(tags=["monitoring"])
Monitor = Annotated[Principal, Depends(require(Permission.SYSTEM_MONITOR))]
Silencer = Annotated[Principal, Depends(require(Permission.ALERT_SILENCE))]
Admin = Annotated[Principal, Depends(require(Permission.SYSTEM_ADMIN))]


class SilenceIn(BaseModel):
    model_config = {"extra": "forbid"}

    kind: Literal["silence", "maintenance"] = "silence"
    # at least one character that is not blank: the schema says what silences.create refuses
    target: str = Field(min_length=1, max_length=255, pattern=r"\S", description="Target name or glob (`web*`, `*`).")
    alert_name: str = Field(default="*", min_length=1, max_length=64, pattern=r"\S",
                            description="Alert name or glob (silences).")
    duration_seconds: JsonInt = Field(gt=0, le=int(silences.MAX_DURATION.total_seconds()))
    reason: str = Field(default="", max_length=1000)


class ApprovalIn(BaseModel):
    model_config = {"extra": "forbid"}

    approve: bool
    comment: str = Field(default="", max_length=500)


class Listing(BaseModel):
    items: list[dict[str, Any]]


@router.get("/alerts", response_model=Listing, responses=errors())
async def list_alerts(settings: SettingsDep, principal: Monitor,
                      state: Annotated[Literal["pending", "firing", "flapping", "resolved", "inactive"] | None,
                                       Query()] = None) -> Listing:
    return Listing(items=await run_in_threadpool(alerts.list_alerts, settings, state=state))


@router.get("/alerts/events", response_model=Listing, responses=errors())
async def alert_events(settings: SettingsDep, principal: Monitor,
                       after: Annotated[int, Query(ge=0, le=MAX_ID, description="Only events with a larger id.")] = 0,
                       limit: Annotated[int, Query(gt=0, le=1000)] = 500) -> Listing:
    """Alert state changes in id order: poll with the last id seen (the SSE stream does the same)."""
    return Listing(items=await run_in_threadpool(alerts.events_after, settings, after, limit))


@router.get("/silences", response_model=Listing, responses=errors())
async def list_silences(settings: SettingsDep, principal: Monitor,
                        kind: Annotated[Literal["silence", "maintenance"] | None, Query()] = None,
                        include_ended: bool = False) -> Listing:
    return Listing(items=await run_in_threadpool(silences.list_silences, settings, kind=kind,
                                                 include_ended=include_ended))


@router.post("/silences", status_code=201, responses=errors(422))
async def create_silence(body: SilenceIn, settings: SettingsDep, principal: Silencer,
                         caller: CallerDep) -> dict[str, Any]:
    """A silence (some alerts) or maintenance window (every alert): no notification, no healing until it ends."""
    return await run_in_threadpool(lambda: silences.create(
        settings, kind=body.kind, target=body.target, alert_name=body.alert_name, reason=body.reason,
        duration=timedelta(seconds=body.duration_seconds), actor=principal.username, caller=caller))


@router.delete("/silences/{silence_id}", responses=errors(404))
async def end_silence(silence_id: Annotated[int, Path(ge=1, le=MAX_ID)], settings: SettingsDep, principal: Silencer,
                      caller: CallerDep) -> dict[str, Any]:
    return await run_in_threadpool(silences.end, settings, silence_id, principal.username, caller)


@router.get("/targets", response_model=Listing, responses=errors())
async def list_targets(settings: SettingsDep, principal: Monitor) -> Listing:
    """Configured targets with their health check and healing plan (the sweep judges their health)."""
    return Listing(items=[{"name": target.name, "severity": target.severity,
                           # the kind only: a check's URL or command line may carry a credential
                           "health_check": next(kind for kind in ("url", "command", "supervised")
                                                if getattr(target.health_check, kind)),
                           "healing_plan": healing_plan(settings, target)}
                          for target in configured_targets(settings)])


@router.get("/heals", response_model=Listing, responses=errors())
async def list_heals(settings: SettingsDep, principal: Monitor, target: str | None = None,
                     limit: Annotated[int, Query(gt=0, le=500)] = 50) -> Listing:
    return Listing(items=await run_in_threadpool(healing.list_runs, settings, target, limit))


@router.post("/heals/{run_id}/approval", responses=errors(404, 409))
async def answer_heal_approval(run_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: ApprovalIn,
                               settings: SettingsDep, principal: Admin, caller: CallerDep) -> dict[str, Any]:
    """Approve or refuse the destructive action a heal run is paused for (what the Prefect UI's form
    answers), as the caller; the run carries on at once. 409 when it is not waiting for an answer."""
    try:
        return await run_in_threadpool(healing.answer_approval, settings, run_id, body.approve, body.comment,
                                       principal.username, caller)
    except PrefectUnavailable as exc:  # the same status, saying what it was for
        raise HTTPException(exc.status_code, f"cannot reach Prefect to resume the run: {exc}") from None
