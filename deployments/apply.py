"""Apply ORCH to a Prefect server: the work pools, the blocks, then every deployment in ``prefect.yaml``.

``python -m deployments.apply`` is what ``orch up`` runs (in parallel with the worker start-up) and
what an operator runs after changing ``prefect.yaml`` against a long-lived server. The deployments are
applied by ``prefect deploy --all``: the file stays the one source of truth a Prefect user expects.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from orch.stack.pools import INPROCESS_POOL

if TYPE_CHECKING:
    from orch.config.schema import PrefectSettings, Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_ROOT / "prefect.yaml"


def deployment_names(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """``flow-name/deployment-name`` for each deployment, as ``prefect deployment run`` wants them."""
    spec = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
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


def apply_deployments() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise SystemExit("prefect deploy failed: " + (lines[-1] if lines else f"exit {result.returncode}"))


SWEEP_DEPLOYMENT = "monitor-sweep/interval"


def apply_sweep_interval(settings: Settings, deployment_name: str = SWEEP_DEPLOYMENT) -> int | None:
    """Make the sweep's interval schedule follow ``monitoring.interval``; returns the interval in seconds,
    or None when ``prefect.yaml`` no longer deploys the sweep (there is nothing to follow it then).

    ``prefect.yaml`` schedules the sweep every 60 s (the default), and ``prefect deploy`` applies that;
    an operator who sets ``monitoring.interval: 30`` expects sweeps every 30 s, so the schedule is
    updated after the deploy. Whether the schedule is active (paused in the UI) is left as it was.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.exceptions import ObjectNotFound

    wanted = timedelta(seconds=settings.monitoring.interval)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            return None
        for entry in deployment.schedules:
            schedule = entry.schedule
            if isinstance(schedule, IntervalSchedule) and schedule.interval != wanted:
                client.update_deployment_schedule(deployment.id, entry.id, schedule=IntervalSchedule(
                    interval=wanted, anchor_date=schedule.anchor_date, timezone=schedule.timezone))
    return settings.monitoring.interval


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
    apply_deployments()
    apply_sweep_interval(settings)
    apply_automations(settings)
    print("applied: " + ", ".join(deployment_names()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
