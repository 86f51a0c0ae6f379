"""``prefect.yaml`` read into plain data: the deployments ORCH deploys, as this host deploys them.

Why it lives in ``orch``: ``orch up`` prints the deployment names and the API's ``POST
/deployments/{flow}/{deployment}/runs`` starts only these, and the domain package never imports
``deployments/`` (the import contract in pyproject.toml); the applier, ``python -m deployments.apply``,
builds on this module instead. Reading is pure: YAML and the flow modules' source through ``ast``, no
Prefect, no flow import (flows import heavy dependencies).

One source for each schedule: a cron schedule is the one written in ``prefect.yaml``; the sweep's is
``monitoring.interval`` alone (the file's sweep has no schedule). :func:`deployment_spec` gives the sweep
its schedule as it makes it this host's, so what is deployed carries the interval from its first run
(deployments/apply.py says why that matters).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from orch.config.schema import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_ROOT / "prefect.yaml"


def read_prefect_file(prefect_file: Path = PREFECT_FILE) -> dict[str, Any]:
    """``prefect.yaml`` as written (a deploy by hand with ``prefect deploy --all`` applies exactly this)."""
    return dict(yaml.safe_load(prefect_file.read_text(encoding="utf-8")))


def deployment_spec(settings: Settings, prefect_file: Path = PREFECT_FILE) -> dict[str, Any]:
    """``prefect.yaml`` as ORCH deploys it: the sweep becomes this host's, ``monitor-sweep/host-<name>`` on the
    work queue ``host-<name>``, scheduled every ``monitoring.interval`` s (orch/monitoring/hosts.py says why
    per host; each host's worker upserts the same deployment as it starts)."""
    from orch.monitoring.hosts import SWEEP_ENTRYPOINT, host_queue, sweep_deployment

    host = settings.monitoring.host_name
    spec = read_prefect_file(prefect_file)
    for deployment in spec.get("deployments", []):
        if deployment.get("entrypoint") == SWEEP_ENTRYPOINT:
            deployment["name"] = sweep_deployment(host)
            deployment["work_pool"] = {**deployment.get("work_pool", {}), "work_queue_name": host_queue(host)}
            deployment["tags"] = [*deployment.get("tags", []), f"host:{host}"]
            deployment["schedules"] = [{"interval": settings.monitoring.interval}]
    return spec


def deployment_names(spec: dict[str, Any] | None = None) -> list[str]:
    """``flow-name/deployment-name`` for each deployment of ``spec`` (default: ``prefect.yaml`` as it is), as
    ``prefect deployment run`` wants them."""
    spec = spec if spec is not None else read_prefect_file()
    return [f"{flow_name(deployment['entrypoint'])}/{deployment['name']}" for deployment in spec.get("deployments", [])]


def work_pools(spec: dict[str, Any]) -> list[str]:
    """The work pools ``spec``'s deployments run on."""
    return sorted({deployment["work_pool"]["name"] for deployment in spec.get("deployments", [])})


def entrypoint_file(entrypoint: str) -> Path:
    """The module file of an entrypoint ``path/to/module.py:function`` of this checkout."""
    return PROJECT_ROOT / entrypoint.partition(":")[0]


def flow_name(entrypoint: str) -> str:
    """The flow's name, read from ``@flow(name=...)`` in its module's source without importing it."""
    function = entrypoint.partition(":")[2]
    tree = ast.parse(entrypoint_file(entrypoint).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            return str(keyword.value.value)
    return function.replace("_", "-")
