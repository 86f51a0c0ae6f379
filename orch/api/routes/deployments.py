"""``POST /deployments/{flow}/{deployment}/runs``: start an ORCH flow deployment ad hoc.

Talks to Prefect's REST API with the project's HTTP client instead of importing Prefect, which would
double the API's memory for one route. Only the deployments in this project's ``prefect.yaml`` can be
started here; Prefect's own API and UI remain the place for anything else. What starting each flow needs
is :mod:`orch.security.flow_access`'s table, the same one the ``run-deployment`` action obeys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import errors
from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.errors import OrchError
from orch.prefect_api import prefect_http_client
from orch.security.flow_access import NotPermitted, check, record_refusal, to_start
from orch.security.rbac import Permission
from orch.storage.engine import session_scope

router = APIRouter(tags=["deployments"])
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class RunRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)


class RunStarted(BaseModel):
    flow_run_id: str
    flow_run_name: str
    deployment: str
    state: str | None
    ui_url: str


def _orch_deployments(settings: Settings) -> frozenset[str]:
    """The deployments ORCH deploys, as this host deploys them (its sweep is ``monitor-sweep/host-<name>``).
    Read for each request: starting a run is rare, and the names follow the settings' host name."""
    from orch.deployment_spec import deployment_names, deployment_spec

    return frozenset(deployment_names(deployment_spec(settings)))


def _log_paths(settings: Settings, value: Any) -> None:
    from orch.analysis.logs import confine_to_log_directories

    if isinstance(value, list) and all(isinstance(item, str) for item in value):  # else: the schema check's
        confine_to_log_directories(settings, value)


def _backup(settings: Settings, value: Any) -> None:
    from orch.backup.restore import backup_path

    if isinstance(value, str) and value != "latest":
        backup_path(settings, value)


# Flow parameters that name files, and the orch-layer check the flow itself applies to each when it runs.
FILE_PARAMETERS: dict[str, dict[str, Callable[[Settings, Any], None]]] = {
    "ops-report": {"log_paths": _log_paths, "audit_paths": _log_paths},
    "restore": {"backup": _backup},
}


def _refuse_early(settings: Settings, flow: str, parameters: dict[str, Any]) -> None:
    """422 before Prefect is asked, for a file parameter the flow would refuse anyway (it checks again
    when it runs, on its own host, so a run started from Prefect is covered too): ``ops-report``'s log
    paths outside the log directories, a ``restore`` backup outside the backup directory."""
    problems = []
    for key, check_value in FILE_PARAMETERS.get(flow, {}).items():
        try:
            check_value(settings, parameters.get(key))
        except OrchError as exc:
            problems.append(f"parameters.{key}: {exc}")
    if problems:
        raise HTTPException(422, "invalid parameters: " + "; ".join(problems))


def _start(settings: Settings, name: str, parameters: dict[str, Any], actor: str, caller: Caller) -> RunStarted:
    api = settings.prefect.resolved_api_url().rstrip("/")
    try:
        with prefect_http_client(settings.prefect, 10.0) as client:
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
    known = await run_in_threadpool(_orch_deployments, settings)
    if name not in known:
        raise HTTPException(404, f"no ORCH deployment {name}; known: {', '.join(sorted(known))}")
    try:
        check(principal.username, principal.role, to_start(name))
    except NotPermitted as refusal:
        await run_in_threadpool(record_refusal, settings.database, refusal, action="deployment.run",
                                resource="deployment", resource_id=name, caller=caller)
        raise
    parameters = (body or RunRequest()).parameters
    await run_in_threadpool(_refuse_early, settings, flow, parameters)
    return await run_in_threadpool(_start, settings, name, parameters, principal.username, caller)
