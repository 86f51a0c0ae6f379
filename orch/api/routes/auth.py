"""``POST /auth/token``: the OAuth2 password form in, a JWT out. Every attempt is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from orch.api.deps import CallerDep, SettingsDep, limit_by_address
from orch.api.schemas import errors
from orch.security.login import LoginFailed, authenticate
from orch.security.tokens import issue_token

router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


@router.post("/auth/token", response_model=TokenOut, responses=errors(),
             dependencies=[Depends(limit_by_address)])
async def login(settings: SettingsDep, caller: CallerDep,
                username: Annotated[str, Form(min_length=1, max_length=64)],
                password: Annotated[str, Form(min_length=1, max_length=1024)]) -> TokenOut:
    """Exchange a username and password for a bearer token valid ``security.jwt_expiry`` seconds.

    After ``security.lockout.max_failures`` failures within the window the account is locked for
    ``lockout_seconds``; the answer to every failure is the same, so it does not reveal which names exist.
    """
    try:
        user = await run_in_threadpool(authenticate, settings, username, password, caller)
    except LoginFailed as exc:
        raise HTTPException(status_code=401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    token, lifetime = issue_token(settings.security, user.username, user.role)
    return TokenOut(access_token=token, expires_in=lifetime, role=user.role)
