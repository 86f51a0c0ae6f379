"""What the last successful ``python -m deployments.apply`` applied, so the next one can skip the work.

Why: ``orch up`` applies at every start, and over existing data nothing has usually changed. The record,
``<data_dir>/deployments-applied.json`` (beside the rest of the stack's state, mode 0600), holds a fingerprint
of everything that decides what the applier creates (:func:`fingerprint`) and the ids of what it created.
The applier skips its work when the fingerprint is unchanged and the server still has it all
(:func:`missing_on_server`: the deployments by id and name, the work pools, the blocks and automations
configured, no retired deployment back); anything else is a full apply. Both questions are a few REST calls
(:mod:`orch.prefect_api`'s client): a skipped apply never imports Prefect (about 3 CPU-s on this machine,
paid while the server starts).

A skip must leave the schedules as a full apply would. Re-applying a deployment deletes its auto-scheduled runs
that have not started, the missed ones included, and the scheduler makes new ones from now; skipped, the runs
whose time passed while the stack was down would all be handed to the worker at once (an hour down at a 60 s
sweep: 60 sweeps together). :func:`drop_missed_runs` deletes exactly those; runs started by hand or by the
sweep (heals) are kept, as a re-apply keeps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.deployment_spec import PROJECT_ROOT, entrypoint_file
from orch.prefect_api import prefect_http_client

if TYPE_CHECKING:
    from orch.config.schema import PrefectSettings, Settings

RECORD_FILE = "deployments-applied.json"
# The applier's own code decides what is created too (pool templates, block types, the automation).
APPLIER_SOURCES = ("deployments/*.py", "blocks/*.py", "orch/deployment_spec.py", "orch/notify.py",
                   "orch/stack/inprocess.py", "orch/stack/pools.py")
BULK_DELETE_LIMIT = 50  # Prefect's limit per bulk call


@dataclass
class AppliedRecord:
    fingerprint: str
    applied_at: str
    deployments: dict[str, str]  # flow/name: deployment id
    work_pools: list[str]
    blocks: list[str] = field(default_factory=list)  # block-type-slug/name
    automations: list[str] = field(default_factory=list)
    absent_deployments: list[str] = field(default_factory=list)  # flow/name: retired, must stay deleted
    absent_automations: list[str] = field(default_factory=list)


def record_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / RECORD_FILE


def load_record(path: Path) -> AppliedRecord | None:
    """The record, or None when there is none or it cannot be read (then everything is applied)."""
    try:
        return AppliedRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def save_record(path: Path, record: AppliedRecord) -> None:
    """Written atomically and only after a complete apply: a half-done apply leaves no record."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(asdict(record), handle, indent=2)
    os.replace(temporary, path)


def forget_record(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint(settings: Settings, spec: dict[str, Any], pools: list[str]) -> str:
    """SHA-256 over what decides the apply: the spec as deployed (this host's sweep and its interval), the work
    pools, ORCH's and Prefect's versions, the source of every flow module and of the applier itself, the
    notification settings (blocks and the failure automation come from them, secrets included: hashed only,
    and the record is readable by its owner alone). Not the Prefect API's address: the same server may come
    back on another port, and another server has none of the recorded deployment ids (:func:`missing_on_server`)."""
    sources = sorted({entrypoint_file(d["entrypoint"]) for d in spec.get("deployments", [])}
                     | {path for pattern in APPLIER_SOURCES for path in PROJECT_ROOT.glob(pattern)})
    material = {
        "spec": spec, "work_pools": pools,
        "versions": {name: _version(name) for name in ("orch-next", "prefect")},
        "sources": {str(path.relative_to(PROJECT_ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
                    for path in sources},
        "notifications": _revealed(settings.notifications.model_dump()),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def missing_on_server(prefect: PrefectSettings, record: AppliedRecord) -> str | None:
    """None when the server still has what ``record`` says was applied, else the first thing that differs."""
    api = prefect.resolved_api_url().rstrip("/")
    with prefect_http_client(prefect, 10.0) as client:
        found = _post(client, f"{api}/deployments/filter",
                      {"deployments": {"id": {"any_": sorted(record.deployments.values())}}, "limit": 200})
        names = {deployment["id"]: deployment["name"] for deployment in found}
        for full_name, deployment_id in sorted(record.deployments.items()):
            if names.get(deployment_id) != full_name.partition("/")[2]:
                return f"deployment {full_name} is gone from the Prefect server"
        found = _post(client, f"{api}/work_pools/filter", {"work_pools": {"name": {"any_": record.work_pools}}})
        if missing := sorted(set(record.work_pools) - {pool["name"] for pool in found}):
            return f"work pool {missing[0]} is gone from the Prefect server"
        for block in record.blocks:
            slug, _, name = block.partition("/")
            if client.get(f"{api}/block_types/slug/{slug}/block_documents/name/{name}").status_code != 200:
                return f"block {block} is gone from the Prefect server"
        wanted = [*record.automations, *record.absent_automations]
        if wanted:
            found = _post(client, f"{api}/automations/filter", {"automations": {"name": {"any_": wanted}}})
            if {automation["name"] for automation in found} != set(record.automations):
                return "the automations on the Prefect server are not those applied"
        for full_name in record.absent_deployments:
            if client.get(f"{api}/deployments/name/{full_name}").status_code != 404:
                return f"retired deployment {full_name} is back on the Prefect server"
    return None


def drop_missed_runs(prefect: PrefectSettings, deployment_ids: list[str]) -> int:
    """Delete the auto-scheduled runs of these deployments whose time passed before they started (what
    re-applying them would delete); returns how many."""
    api = prefect.resolved_api_url().rstrip("/")
    before = datetime.now(timezone.utc).isoformat()  # to the microsecond: a run due earlier this second is missed too
    dropped = 0
    kept: list[str] = []
    with prefect_http_client(prefect, 10.0) as client:
        while True:
            runs = _post(client, f"{api}/flow_runs/filter", {"limit": 200, "flow_runs": {
                "deployment_id": {"any_": deployment_ids}, "state": {"type": {"any_": ["SCHEDULED"]}},
                "expected_start_time": {"before_": before}, **({"id": {"not_any_": kept}} if kept else {})}})
            missed = [run["id"] for run in runs if run.get("auto_scheduled") and not run.get("run_count")]
            kept += [run["id"] for run in runs if run["id"] not in missed]
            deleted = 0
            for start in range(0, len(missed), BULK_DELETE_LIMIT):
                batch = missed[start:start + BULK_DELETE_LIMIT]
                deleted += len(_post(client, f"{api}/flow_runs/bulk_delete", {
                    "flow_runs": {"id": {"any_": batch}}, "limit": len(batch)}, key="deleted"))
            dropped += deleted
            if not deleted:  # none missed, or each started meanwhile: nothing left to drop
                return dropped


def _post(client: Any, url: str, body: dict[str, Any], key: str | None = None) -> list[Any]:
    response = client.post(url, json=body)
    response.raise_for_status()
    found = response.json()
    return list(found[key] if key else found)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _revealed(value: Any) -> Any:
    """Settings as plain data with secret values in clear (for the hash only: a changed secret re-applies)."""
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    reveal = getattr(value, "get_secret_value", None)
    return reveal() if callable(reveal) else value
