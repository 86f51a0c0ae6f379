"""Backups and supply-chain evidence as the console and operators read them: ``/backups`` and ``/supply-chain``.

Reading needs ``system:monitor``; verifying a backup again (it decompresses and checks a copy, and
records the verdict in the catalog) needs ``task:create``, as starting a backup does. Taking a backup or
a restore, an SBOM or a scan goes through ``POST /deployments/{flow}/{deployment}/runs``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import errors
from orch.backup import catalog_view
from orch.backup.files import BackupError
from orch.security.rbac import Permission
from orch.supply_chain.status import supply_chain_overview

router = APIRouter(tags=["operations"])
Monitor = Annotated[Principal, Depends(require(Permission.SYSTEM_MONITOR))]
Creator = Annotated[Principal, Depends(require(Permission.TASK_CREATE))]


@router.get("/backups", responses=errors())
async def list_backups(settings: SettingsDep, principal: Monitor) -> dict[str, Any]:
    """The backup catalog newest first with each backup's latest verification, then uncataloged files."""
    try:
        return await run_in_threadpool(catalog_view.backups_overview, settings)
    except BackupError as exc:  # an unreadable catalog or directory: the operator must fix it
        raise HTTPException(503, str(exc)) from None


# ``:path`` so that a name with a separator reaches the check and is refused by name, not routed elsewhere.
@router.post("/backups/{file:path}/verify", responses=errors(404, 409))
async def verify_backup(file: Annotated[str, Path(max_length=255)], settings: SettingsDep, principal: Creator,
                        caller: CallerDep) -> dict[str, Any]:
    """Checksum, decompress, integrity check and data-quality suite on a copy, as ``orch backup verify``;
    answers the backup's entry with the verdict (``verified: false`` and the reason when unsound)."""
    return await run_in_threadpool(catalog_view.verify_backup, settings, file, principal.username, caller)


@router.get("/supply-chain", responses=errors())
async def supply_chain(settings: SettingsDep, principal: Monitor) -> dict[str, Any]:
    """The SBOM (signed? does its signature verify now?) and the newest security-scan report."""
    return await run_in_threadpool(supply_chain_overview, settings)
