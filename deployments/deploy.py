"""The deployments of a spec (orch/deployment_spec.py) created on the Prefect server with Prefect's client, in
this process: what ``prefect deploy --all`` did for ``orch up`` until issue 17.

Why not the CLI: ``prefect deploy --all`` was the slowest step of ``orch up`` (10-13 s on a fresh server,
16-22 s over existing data on this project's 2-core machine): a second Python process importing Prefect's CLI,
then every flow module (and what they import) to read each flow's name and parameters. Here the flow's name
comes from its source (``ast``) and its parameter schema from Prefect's own reader of the source
(:func:`prefect.utilities.callables.parameter_schema_from_entrypoint`, the same schema ``prefect deploy``
derives from the imported flow: tests/test_deployments_apply.py compares them), and both are computed by
:func:`prepare` while the server may still be starting; :func:`create` is then two calls per deployment.

What is deployed is what ``prefect deploy --all`` deployed from this file: the same flow, name, pool and queue,
parameters, description, tags, schedules, a ``set_working_directory`` pull step to this checkout, the flow
module's hash as the version, the parameter schema enforced. The file's features ORCH does not use (build,
push or pull steps, triggers, concurrency limits ...) are refused by name rather than silently dropped.
A schedule is part of the create call: the server replaces the deployment's schedules and its not yet started
auto-scheduled runs in the same upsert and marks it updated, which its scheduler's fast loop looks for (issue 15).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orch.deployment_spec import PROJECT_ROOT, entrypoint_file, flow_name

DEPLOYMENT_KEYS = frozenset({"name", "description", "entrypoint", "tags", "parameters", "work_pool", "schedules"})
WORK_POOL_KEYS = frozenset({"name", "work_queue_name", "job_variables"})
SCHEDULE_KEYS = frozenset({"interval", "cron", "timezone", "active"})
UNUSED_FILE_KEYS = ("build", "push", "pull")
# Where a process worker runs the flow from: this checkout (what `prefect deploy` generates for local code).
PULL_STEPS = [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]


class UnsupportedSpec(SystemExit):
    """``prefect.yaml`` uses a feature this applier does not deploy; the message names it."""


@dataclass(frozen=True)
class PreparedDeployment:
    """One deployment, ready to send: ``arguments`` are ``client.create_deployment``'s but the flow id."""

    flow_name: str
    name: str
    arguments: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def prepare(spec: dict[str, Any]) -> list[PreparedDeployment]:
    """Every deployment of ``spec`` as create-call arguments; no server needed (call it while one starts)."""
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    for key in UNUSED_FILE_KEYS:
        if spec.get(key):
            raise UnsupportedSpec(f"prefect.yaml: top-level {key!r} steps are not supported by deployments.apply")
    prepared = []
    for deployment in spec.get("deployments", []):
        where = f"prefect.yaml deployment {deployment.get('name')!r}"
        _refuse_unknown(deployment, DEPLOYMENT_KEYS, where)
        pool = deployment["work_pool"]
        _refuse_unknown(pool, WORK_POOL_KEYS, f"{where} work_pool")
        entrypoint = deployment["entrypoint"]
        module = entrypoint_file(entrypoint)
        schema = parameter_schema_from_entrypoint(f"{module}:{entrypoint.partition(':')[2]}")
        prepared.append(PreparedDeployment(flow_name(entrypoint), deployment["name"], {
            "name": deployment["name"],
            "version": hashlib.md5(module.read_bytes(), usedforsecurity=False).hexdigest(),  # Prefect's flow.version
            "schedules": _schedules(deployment.get("schedules") or [], where),
            "parameters": deployment.get("parameters") or {},
            "description": deployment.get("description"),
            "work_pool_name": pool["name"],
            "work_queue_name": pool.get("work_queue_name"),
            "tags": deployment.get("tags") or [],
            "entrypoint": entrypoint,
            "parameter_openapi_schema": schema.model_dump(exclude_unset=True),
            "enforce_parameter_schema": True,
            "pull_steps": PULL_STEPS,
            "job_variables": pool.get("job_variables") or {},
        }))
    return prepared


def create(prepared: list[PreparedDeployment]) -> dict[str, str]:
    """Create or update each deployment (an upsert by flow and name); ``flow/name``: deployment id."""
    from prefect.client.orchestration import get_client

    flows: dict[str, Any] = {}
    created = {}
    with get_client(sync_client=True) as client:
        for deployment in prepared:
            if deployment.flow_name not in flows:
                flows[deployment.flow_name] = client.create_flow_from_name(deployment.flow_name)
            created[deployment.full_name] = str(client.create_deployment(flows[deployment.flow_name],
                                                                         **deployment.arguments))
    return created


def _schedules(entries: list[dict[str, Any]], where: str) -> list[Any]:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    schedules = []
    for entry in entries:
        _refuse_unknown(entry, SCHEDULE_KEYS, f"{where} schedule")
        if "interval" in entry:
            schedule: Any = IntervalSchedule(interval=timedelta(seconds=entry["interval"]),
                                             **({"timezone": entry["timezone"]} if "timezone" in entry else {}))
        elif "cron" in entry:
            schedule = CronSchedule(cron=entry["cron"], timezone=entry.get("timezone"))
        else:
            raise UnsupportedSpec(f"{where}: a schedule needs 'interval' or 'cron'")
        schedules.append(DeploymentScheduleCreate(schedule=schedule, active=entry.get("active", True)))
    return schedules


def _refuse_unknown(found: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(found) - known)
    if unknown:
        raise UnsupportedSpec(f"{where}: {', '.join(unknown)} not supported by deployments.apply "
                              "(deploy such a deployment with `prefect deploy`)")
