"""``GET /mcp/ping``: the guide's check for MCP clients, behind ``Authorization: Bearer <ORCH_MCP_TOKEN>``."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from orch.api.deps import SettingsDep, limit_by_address, unauthorized
from orch.api.schemas import errors

router = APIRouter(tags=["mcp"])


class Pong(BaseModel):
    status: str = "ok"


@router.get("/mcp/ping", response_model=Pong, responses=errors(), dependencies=[Depends(limit_by_address)])
def mcp_ping(request: Request, settings: SettingsDep) -> Pong:
    token = settings.security.mcp_token
    if token is None:
        raise HTTPException(503, "security.mcp_token (ORCH_MCP_TOKEN) is not configured")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise unauthorized("send Authorization: Bearer <ORCH_MCP_TOKEN>")
    return Pong()
