"""``POST /deployments/{flow}/{deployment}/runs``: start an ORCH flow deployment ad hoc.

Talks to Prefect's REST API with the project's HTTP client instead of importing Prefect, which would
double the API's memory for one route. Only the deployments in this project's ``prefect.yaml`` can be
started here; Prefect's own API and UI remain the place for anything else.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import errors
from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.http import http_client
from orch.security.rbac import Permission
from orch.storage.engine import session_scope

router = APIRouter(tags=["deployments"])
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# Flows that change or restore the system itself: admins only.
ADMIN_FLOWS = frozenset({"restore", "emergency-recovery", "service-recovery", "self-heal", "db-maintenance"})


class RunRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)


class RunStarted(BaseModel):
    flow_run_id: str
    flow_run_name: str
    deployment: str
    state: str | None
    ui_url: str


@lru_cache(maxsize=1)
def _orch_deployments() -> frozenset[str]:
    from deployments.apply import deployment_names

    return frozenset(deployment_names())


def _start(settings: Settings, name: str, parameters: dict[str, Any], actor: str, caller: Caller) -> RunStarted:
    api = settings.prefect.resolved_api_url().rstrip("/")
    try:
        with http_client(10.0) as client:
            found = client.get(f"{api}/deployments/name/{name}")
            if found.status_code == 404:
                raise HTTPException(404, f"deployment {name} is not registered on the Prefect server yet "
                                         "(orch up applies prefect.yaml)")
            found.raise_for_status()
            deployment_id = found.json()["id"]
            _check_parameters(name, found.json().get("parameter_openapi_schema") or {}, parameters)
            created = client.post(f"{api}/deployments/{deployment_id}/create_flow_run",
                                  json={"parameters": parameters})
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - Prefect unreachable or answering nonsense: 503, retry later
        raise HTTPException(503, f"Prefect server at {api} unavailable: {exc.__class__.__name__}",
                            headers={"Retry-After": "10"}) from None
    if created.status_code in (400, 409, 422):
        detail = created.json().get("detail", created.text) if created.headers.get("content-type", "").startswith(
            "application/json") else created.text
        raise HTTPException(422, f"Prefect refused the parameters: {str(detail)[:500]}")
    if created.status_code >= 300:
        raise HTTPException(503, f"Prefect answered {created.status_code} creating the run",
                            headers={"Retry-After": "10"})
    run = created.json()
    with session_scope(settings.database, write_lock=True) as session:
        record_audit(session, actor=actor, action="deployment.run", resource="deployment", resource_id=name,
                     ip_address=caller.ip_address, user_agent=caller.user_agent,
                     details={"flow_run_id": run["id"], "parameters": sorted(parameters)})
    ui = api.removesuffix("/api")
    return RunStarted(flow_run_id=run["id"], flow_run_name=run.get("name", ""), deployment=name,
                      state=(run.get("state") or {}).get("type"), ui_url=f"{ui}/runs/flow-run/{run['id']}")


def _check_parameters(name: str, schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Refuse unknown, missing or mistyped parameters here, whatever the deployment's own enforcement."""
    import jsonschema

    known = set(schema.get("properties", {}))
    problems = [f"parameters.{key}: {name} has no such parameter" for key in sorted(set(parameters) - known)]
    validator = jsonschema.Draft202012Validator({**schema, "additionalProperties": True})
    problems += [f"parameters.{'.'.join(map(str, e.path)) or ''}: {e.message}".replace(".: ", ": ")
                 for e in validator.iter_errors(parameters)]
    if problems:
        raise HTTPException(422, "invalid parameters: " + "; ".join(problems))


@router.post("/deployments/{flow}/{deployment}/runs", status_code=201, response_model=RunStarted,
             responses=errors(404))
async def run_deployment(flow: Annotated[str, Path(pattern=NAME)], deployment: Annotated[str, Path(pattern=NAME)],
                         settings: SettingsDep, caller: CallerDep,
                         principal: Annotated[Principal, Depends(require(Permission.TASK_CREATE))],
                         body: RunRequest | None = None) -> RunStarted:
    """Start ``flow/deployment`` now with ``parameters`` (checked by Prefect against the flow's signature).
    Recovery, restore, self-heal and maintenance flows need an admin."""
    name = f"{flow}/{deployment}"
    if name not in await run_in_threadpool(_orch_deployments):
        raise HTTPException(404, f"no ORCH deployment {name}; known: {', '.join(sorted(_orch_deployments()))}")
    if flow in ADMIN_FLOWS and not principal.may(Permission.SYSTEM_ADMIN):
        raise HTTPException(403, f"starting {flow} needs permission 'system:admin'")
    return await run_in_threadpool(_start, settings, name, (body or RunRequest()).parameters, principal.username,
                                   caller)
