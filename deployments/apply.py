"""Apply ORCH to a Prefect server: the work pools, the blocks, every deployment of ``prefect.yaml`` (the sweep
as this host's, orch/deployment_spec.py), the retired deployments deleted, then the automations.

``python -m deployments.apply [--force]`` is what ``orch up`` runs (beside the worker's start-up) and what an
operator runs after changing ``prefect.yaml`` against a long-lived server. It does the work only when
something that decides it changed since its last successful apply, or the server lost part of it
(deployments/applied.py): over existing data a start then costs a few REST calls instead of a deploy.
``--force`` applies regardless. The deployments are created in this process with Prefect's client
(deployments/deploy.py), no longer with ``prefect deploy --all`` in a child process (issue 17).

The sweep's schedule goes into the deployment as it is created, never onto the schedule afterwards. Corrected
after the deploy (as once), the deployment first carried ``prefect.yaml``'s 60 s: Prefect's scheduler could
create runs from it, a correction deletes only future runs and does not mark the deployment updated, so
Prefect's fast scheduler for recently changed deployments skipped it and the first 5 s runs waited for the
main scheduler loop (PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS, 60 s): the first heal of issue 15 took
45 s at ``monitoring.interval: 5``. The file now has no sweep schedule at all: ``monitoring.interval`` is its
one source.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments.applied import (
    AppliedRecord,
    drop_missed_runs,
    fingerprint,
    forget_record,
    load_record,
    missing_on_server,
    now_iso,
    record_path,
    save_record,
)
from orch.deployment_spec import PREFECT_FILE, PROJECT_ROOT, deployment_names, deployment_spec, work_pools
from orch.monitoring.hosts import SWEEP_ENTRYPOINT
from orch.stack.pools import INPROCESS_POOL

if TYPE_CHECKING:
    from orch.config.schema import PrefectSettings, Settings

# Importable from here as before (tests, scripts/bench_monitoring.py); orch/deployment_spec.py holds them.
__all__ = ["PREFECT_FILE", "PROJECT_ROOT", "SWEEP_ENTRYPOINT", "apply_deployments", "deployment_names",
           "deployment_spec", "ensure_work_pools", "main"]
RETIRED_DEPLOYMENTS = ("monitor-sweep/interval",)  # the one sweep for every host, on whichever worker took it


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
        time.sleep(0.1)


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


def delete_retired_deployments(names: Collection[str] = RETIRED_DEPLOYMENTS) -> list[str]:
    """Delete deployments earlier versions applied and ORCH no longer has; returns those deleted.

    ``monitor-sweep/interval`` swept once per interval on any host: left next to the per-host sweeps it
    would add a sweep, measuring whichever host took it (a deploy of ``prefect.yaml`` by hand creates it, now
    without a schedule)."""
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


def apply_deployments(spec: dict[str, Any]) -> dict[str, str]:
    """Create or update every deployment of ``spec`` (from :func:`deployment_spec`); ``flow/name``: id."""
    from deployments.deploy import create, prepare

    return create(prepare(spec))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.apply", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="apply even when nothing changed since the last apply")
    force = parser.parse_args(argv).force

    from orch.config.runtime import get_settings
    from orch.lean_imports import lean_process

    lean_process(prefect=True)

    settings = get_settings()
    os.environ["PREFECT_API_URL"] = settings.prefect.resolved_api_url()  # for Prefect's client
    wait = float(os.environ.get("ORCH_PREFECT_WAIT", "90"))
    spec = deployment_spec(settings)
    pools = work_pools(spec)
    wanted = fingerprint(settings, spec, pools)
    path = record_path(settings)
    record = load_record(path)
    if record is not None and record.fingerprint == wanted and not force:
        wait_for_server(settings.prefect, wait)
        problem = missing_on_server(settings.prefect, record)
        if problem is None:
            dropped = drop_missed_runs(settings.prefect, sorted(record.deployments.values()))
            print(f"unchanged since {record.applied_at}: {len(record.deployments)} deployments"
                  + (f"; {dropped} run(s) missed while stopped dropped" if dropped else ""))
            return 0
        print(f"applying: {problem}")
    else:
        print("applying: " + ("forced" if force else "first apply" if record is None else "something changed"))
    forget_record(path)
    _apply(settings, spec, pools, wanted, path, wait)
    return 0


def _apply(settings: Settings, spec: dict[str, Any], pools: list[str], wanted: str, path: Path, wait: float) -> None:
    """Everything, in dependency order; the record last. The deployments' arguments are prepared (Prefect
    imported, schemas read) before waiting, which overlaps a starting server's boot."""
    from blocks.register import register_blocks
    from deployments.automations import FAILURE_AUTOMATION, RETIRED_AUTOMATIONS, apply_automations
    from deployments.deploy import create, prepare

    prepared = prepare(spec)
    wait_for_server(settings.prefect, wait)
    ensure_work_pools(pools)
    blocks = register_blocks(settings)
    created = create(prepared)
    delete_retired_deployments()
    automations = apply_automations(settings)
    save_record(path, AppliedRecord(
        fingerprint=wanted, applied_at=now_iso(), deployments=created, work_pools=pools, blocks=blocks,
        automations=automations, absent_deployments=list(RETIRED_DEPLOYMENTS),
        absent_automations=sorted({*RETIRED_AUTOMATIONS, FAILURE_AUTOMATION} - set(automations))))
    print("applied: " + ", ".join(created))


if __name__ == "__main__":
    sys.exit(main())
