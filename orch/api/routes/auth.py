"""``POST /auth/token``: the OAuth2 password form in, a JWT out. Every checked attempt is audited.

Every answer carries ``Cache-Control: no-store`` and ``Pragma: no-cache`` (RFC 6749 5.1): a token in a
shared or browser cache would outlive the login that made it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from orch.api.deps import CallerDep, SettingsDep, limit_by_address
from orch.api.schemas import errors
from orch.audit import Caller
from orch.config.schema import Settings
from orch.security.login import LoginFailed, LoginThrottled, authenticate
from orch.security.tokens import issue_token

router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/auth/token", response_model=TokenOut, responses=errors(),
             dependencies=[Depends(limit_by_address)])
async def login(settings: SettingsDep, caller: CallerDep, response: Response,
                username: Annotated[str, Form(min_length=1, max_length=64)],
                password: Annotated[str, Form(min_length=1, max_length=1024)]) -> TokenOut:
    """Exchange a username and password for a bearer token valid ``security.jwt_expiry`` seconds.

    After ``security.lockout.max_failures`` failures for one user from one address, that address waits
    (429 with ``Retry-After``, the password not even checked), longer after each further failure; other
    addresses are not affected. Every failed check answers the same words, whether the name exists or not.
    """
    response.headers.update(NO_STORE)
    return await log_in(settings, caller, username, password)


async def log_in(settings: Settings, caller: Caller, username: str, password: str) -> TokenOut:
    """The one login path (the API's token and the console's session cookie): throttles, argon2, audit.
    Raises 429 (with ``Retry-After``) or 401 as :func:`login` answers them."""
    try:
        user = await run_in_threadpool(authenticate, settings, username, password, caller)
    except (LoginThrottled, LoginFailed) as exc:  # an HTTPException: the console's login form shows it
        raise HTTPException(exc.status_code, str(exc), headers={**exc.http_headers(), **NO_STORE}) from None
    token, lifetime = issue_token(settings.security, user.username, user.role, user.token_version)
    return TokenOut(access_token=token, expires_in=lifetime, role=user.role)
