"""Apply ORCH to a Prefect server: the work pools, the blocks, then every deployment in ``prefect.yaml``.

``python -m deployments.apply`` is what ``orch up`` runs (in parallel with the worker start-up) and
what an operator runs after changing ``prefect.yaml`` against a long-lived server. The deployments are
applied by ``prefect deploy --all``: the file stays the one source of truth a Prefect user expects, but
for the sweep, which is this host's (:func:`deployment_spec`): each host sweeps itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from orch.stack.pools import INPROCESS_POOL

if TYPE_CHECKING:
    from orch.config.schema import PrefectSettings, Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_ROOT / "prefect.yaml"


def deployment_names(spec: dict[str, Any] | None = None) -> list[str]:
    """``flow-name/deployment-name`` for each deployment of ``spec`` (default: ``prefect.yaml`` as it is), as
    ``prefect deployment run`` wants them."""
    spec = spec if spec is not None else yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))
    names = []
    for deployment in spec.get("deployments", []):
        module, _, function = deployment["entrypoint"].partition(":")
        names.append(f"{_flow_name(PROJECT_ROOT / module, function)}/{deployment['name']}")
    return names


def work_pools(prefect_file: Path = PREFECT_FILE) -> list[str]:
    spec = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    return sorted({d["work_pool"]["name"] for d in spec.get("deployments", [])})


def _flow_name(module_file: Path, function: str) -> str:
    """Read ``@flow(name=...)`` without importing the module (flows import heavy dependencies)."""
    import ast

    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            return str(keyword.value.value)
    return function.replace("_", "-")


def wait_for_server(prefect: PrefectSettings, timeout: float) -> None:
    from orch.prefect_api import prefect_readiness

    deadline = time.monotonic() + timeout
    while True:
        ready = prefect_readiness(prefect, timeout=2)
        if ready.ready:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"Prefect server at {prefect.resolved_api_url()} not ready after {timeout:.0f} s: "
                             f"{ready.problem}")
        time.sleep(0.3)


def ensure_work_pools(names: list[str], inprocess: Collection[str] = (INPROCESS_POOL,)) -> None:
    """Create each work pool with its worker's default job template, leaving existing ones alone.

    Pools named in ``inprocess`` are of ORCH's in-process worker type (their runs execute inside ORCH's
    worker process, see orch/stack/inprocess.py); every other pool is a Prefect process pool.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    from orch.stack.inprocess import InProcessWorker

    with get_client(sync_client=True) as client:
        for name in names:
            worker = InProcessWorker if name in inprocess else ProcessWorker
            with contextlib.suppress(ObjectAlreadyExists):  # an existing pool keeps its settings
                client.create_work_pool(WorkPoolCreate(
                    name=name, type=worker.type, base_job_template=worker.get_default_base_job_template()))


SWEEP_ENTRYPOINT = "flows/monitor_sweep.py:monitor_sweep"
RETIRED_DEPLOYMENTS = ("monitor-sweep/interval",)  # the one sweep for every host, on whichever worker took it


def deployment_spec(settings: Settings, prefect_file: Path = PREFECT_FILE) -> dict[str, Any]:
    """``prefect.yaml`` as ORCH deploys it: the sweep becomes this host's, ``monitor-sweep/host-<name>`` on the
    work queue ``host-<name>`` every ``monitoring.interval`` s (orch/monitoring/hosts.py says why per host).

    Each host's worker upserts the same deployment as it starts (:func:`orch.monitoring.hosts.ensure_host`),
    so a worker host that never runs this still sweeps; applied from here, a fresh ``orch up`` has it as
    soon as the rest. The interval goes into what ``prefect deploy`` applies, not onto the schedule
    afterwards. Corrected after the deploy (as before), the deployment first carried the file's 60 s:
    Prefect's scheduler could create runs from it, a correction deletes only future runs and does not
    mark the deployment updated, so Prefect's fast scheduler for recently changed deployments skipped it
    and the first 5 s runs waited for the main scheduler loop (PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS,
    60 s): the first heal of issue 15 took 45 s at ``monitoring.interval: 5``. The file keeps 60 s for a
    deploy by hand.
    """
    from orch.monitoring.hosts import host_queue, sweep_deployment

    host = settings.monitoring.host_name
    spec = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    for deployment in spec.get("deployments", []):
        if deployment.get("entrypoint") == SWEEP_ENTRYPOINT:
            deployment["name"] = sweep_deployment(host)
            deployment["work_pool"] = {**deployment.get("work_pool", {}), "work_queue_name": host_queue(host)}
            deployment["tags"] = [*deployment.get("tags", []), f"host:{host}"]
            for schedule in deployment.get("schedules") or []:
                if "interval" in schedule:
                    schedule["interval"] = settings.monitoring.interval
    return dict(spec)


def delete_retired_deployments(names: Collection[str] = RETIRED_DEPLOYMENTS) -> list[str]:
    """Delete deployments earlier versions applied and ORCH no longer has; returns those deleted.

    ``monitor-sweep/interval`` swept once per interval on any host: left next to the per-host sweeps it
    would add a sweep, measuring whichever host took it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deleted = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.delete_deployment(client.read_deployment_by_name(name).id)
            except ObjectNotFound:
                continue
            deleted.append(name)
    return deleted


def apply_deployments(spec: dict[str, Any]) -> None:
    """``prefect deploy --all`` of ``spec`` (from :func:`deployment_spec`), run in this checkout."""
    with tempfile.TemporaryDirectory(prefix="orch-deploy-") as tmp:
        file = Path(tmp) / "prefect.yaml"
        file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        result = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all", "--prefect-file",
             str(file)], cwd=PROJECT_ROOT, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise SystemExit("prefect deploy failed: " + (lines[-1] if lines else f"exit {result.returncode}"))


def main() -> int:
    from blocks.register import register_blocks
    from deployments.automations import apply_automations
    from orch.config.runtime import get_settings

    settings = get_settings()
    api_url = settings.prefect.resolved_api_url()
    os.environ["PREFECT_API_URL"] = api_url
    wait_for_server(settings.prefect, timeout=float(os.environ.get("ORCH_PREFECT_WAIT", "90")))
    ensure_work_pools(work_pools())
    register_blocks(settings)
    spec = deployment_spec(settings)
    apply_deployments(spec)
    delete_retired_deployments()
    apply_automations(settings)
    print("applied: " + ", ".join(deployment_names(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
