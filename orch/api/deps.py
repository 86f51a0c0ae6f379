"""Request dependencies: settings, the caller's identity, permission checks and rate limits.

Every route names its permission with ``Depends(require(Permission.X))`` (or is listed in
:data:`PUBLIC_ROUTES`); a test walks the app's routes and fails on a route that does neither.

Identity is re-read from the database on every request, so a disabled user or a changed role takes
effect at once, not when the token expires; that costs one indexed primary-key read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select

from orch.audit import Caller
from orch.config.schema import Settings
from orch.security.rbac import Permission, has_permission
from orch.security.tokens import TokenError, decode_token
from orch.storage.engine import get_engine
from orch.storage.models import User

# Routes anyone may call: probes, metrics scrapes, the login itself, and routes with their own
# authentication (HMAC-signed webhooks, the MCP bearer token).
PUBLIC_ROUTES = frozenset({
    "/health", "/healthz", "/metrics", "/auth/token", "/webhook", "/mcp/ping", "/events/health",
    "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc",
})

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (or core) with one role."""

    username: str
    role: str

    def may(self, permission: Permission) -> bool:
        return has_permission(self.role, permission)

    @property
    def core_id(self) -> str | None:
        """A ``system`` user acts for the core named like it (user ``WORK_AI_01`` is core ``WORK_AI_01``)."""
        return self.username if self.role == "system" else None


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def caller_of(request: Request) -> Caller:
    return Caller(ip_address=client_address(request), user_agent=request.headers.get("user-agent"))


CallerDep = Annotated[Caller, Depends(caller_of)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _principal_from_token(settings: Settings, token: str | None) -> Principal:
    if not token:
        raise unauthorized("not authenticated: send Authorization: Bearer <token> from POST /auth/token")
    try:
        claims = decode_token(settings.security, token)
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    with get_engine(settings.database).connect() as connection:  # a plain read: no ORM session needed
        row = connection.execute(select(User.role, User.is_active).where(User.username == claims.username)).first()
    if row is None or not row.is_active:
        raise unauthorized("token's user no longer exists or is disabled")
    return Principal(username=claims.username, role=row.role)


async def rate_limit(request: Request, key: str) -> None:
    """Count the request against ``key``; 429 with ``Retry-After`` when over the limit."""
    verdict = await request.app.state.rate_limiter.hit(key)
    if not verdict.allowed:
        raise HTTPException(status_code=429, detail=f"rate limit exceeded; retry after {verdict.retry_after} s",
                            headers={"Retry-After": str(verdict.retry_after)})


async def authorize(request: Request, token: str | None, permission: Permission) -> Principal:
    """Authenticate the bearer token, apply the user's rate limit, then check ``permission``."""
    settings: Settings = request.app.state.settings
    token = token or request.query_params.get("access_token")  # browsers' EventSource cannot send headers
    principal = await run_in_threadpool(_principal_from_token, settings, token)
    request.state.user = principal.username
    await rate_limit(request, f"user:{principal.username}")
    if not principal.may(permission):
        raise HTTPException(status_code=403, detail=f"role {principal.role!r} lacks permission {permission.value!r}")
    return principal


async def limit_by_address(request: Request) -> None:
    """The rate limit for anonymous routes (the login, the MCP ping), keyed by client address."""
    await rate_limit(request, f"address:{client_address(request)}")


def require(permission: Permission) -> Callable[..., object]:
    """A dependency that authenticates the caller, checks ``permission`` and applies the user's rate limit."""

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        return await authorize(request, token, permission)

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route-permission test
    return dependency


def require_core(principal: Principal, core_id: str) -> None:
    """A core may act only for itself."""
    if principal.core_id != core_id:
        raise HTTPException(status_code=403, detail=f"user {principal.username!r} may not act for core {core_id!r}")
