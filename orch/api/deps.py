"""Request dependencies: settings, the caller's identity, permission checks and rate limits.

Every route names its permission with ``Depends(require(Permission.X))`` (or is listed in
:data:`PUBLIC_ROUTES`); a test walks the app's routes and fails on a route that does neither.

Identity is re-read from the database, not trusted from the token, so a disabled user or a changed role
takes effect long before the token expires; the same read compares the token's ``ver`` claim with the
user's ``token_version``, which every change of password, role or state raises, so such a change also
revokes the tokens issued before it (the new password's owner logs in again; the old token's holder
cannot). Each process keeps a token's checked identity for ``security.identity_cache_seconds`` (1 s):
a client sending hundreds of requests a second then costs
one token check and one read per second instead of one per request, and a change made through this
process's ``/users`` clears the cache at once (other replicas follow within the period).

A token is read from the ``Authorization`` header; ``?access_token=`` is accepted by the streaming
routes alone (``require(..., query_token=True)``), because a browser's EventSource cannot send headers,
and a token in a URL ends up in proxy and access logs. Without either, the console's session cookie
(:mod:`orch.api.console.session`) carries the same token; a change authenticated by that cookie must
also carry the session's CSRF token and come from this origin, since a browser sends cookies on its own.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import bindparam, select

from orch.api.console.session import SESSION_COOKIE, CsrfRefused, check_cookie_change
from orch.api.single_flight import SingleFlight
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
    "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/ui/login",
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


async def request_settings(request: Request) -> Settings:
    """The settings the app was built with (``app.state``), not :func:`orch.config.runtime.get_settings`:
    a test or a second app in one process may serve another configuration.

    ``async`` like every dependency here that does not block: FastAPI runs a plain ``def`` dependency in
    its thread pool, a hand-off to a thread and back on every request for an attribute read."""
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(request_settings)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def caller_of(request: Request) -> Caller:
    return Caller(ip_address=client_address(request), user_agent=request.headers.get("user-agent"))


async def request_caller(request: Request) -> Caller:
    """:func:`caller_of` as a dependency (``async``: see :func:`request_settings`)."""
    return caller_of(request)


CallerDep = Annotated[Caller, Depends(request_caller)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


_IDENTITY = select(User.role, User.is_active, User.token_version) \
    .where(User.username == bindparam("username"))  # built once
IDENTITY_CACHE_LIMIT = 10_000  # distinct live tokens remembered per process; more clears the cache


class IdentityCache:
    """Checked identities by token digest, each kept until ``ttl`` seconds pass or its token expires.

    Keyed by a SHA-256 digest so the process holds no bearer token longer than its request. ``clock``
    (seconds, monotonic) is what the period is measured on: a test passes its own to step past the
    period instead of sleeping through it.

    A token missing from the cache is checked once however many of its requests arrive meanwhile
    (``reads``, :mod:`orch.api.single_flight`). Each :meth:`clear` starts a new ``generation``: a check
    begun before it neither serves the requests after it nor fills the cache."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.generation = 0
        self.reads = SingleFlight()
        self._entries: dict[bytes, tuple[Principal, float]] = {}  # digest -> principal, valid until (clock)
        self._lock = threading.Lock()

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    def put(self, key: bytes, principal: Principal, token_expires_at: int, generation: int) -> None:
        """Remember ``principal``, read in ``generation``: not if the cache was cleared since."""
        if self.ttl <= 0:
            return
        until = self.clock() + min(self.ttl, token_expires_at - time.time())
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= IDENTITY_CACHE_LIMIT:
                self._entries.clear()
            self._entries[key] = (principal, until)

    def clear(self) -> None:
        """Forget every identity: a user was changed, disabled or removed."""
        with self._lock:
            self.generation += 1
            self._entries.clear()


def _principal_from_token(settings: Settings, token: str, cache: IdentityCache, key: bytes,
                          generation: int) -> Principal:
    try:
        claims = decode_token(settings.security, token)
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    with get_engine(settings.database).connect() as connection:  # a plain read: no ORM session needed
        row = connection.execute(_IDENTITY, {"username": claims.username}).first()
    if row is None or not row.is_active:
        raise unauthorized("token's user no longer exists or is disabled")
    if row.token_version != claims.version:
        raise unauthorized("token revoked: the user's password, role or state changed since; log in again")
    principal = Principal(username=claims.username, role=row.role)
    cache.put(key, principal, claims.expires_at, generation)
    return principal


async def rate_limit(request: Request, key: str) -> None:
    """Count the request against ``key``; 429 with ``Retry-After`` when over the limit."""
    verdict = await request.app.state.rate_limiter.hit(key)
    if not verdict.allowed:
        raise HTTPException(status_code=429, detail=f"rate limit exceeded; retry after {verdict.retry_after} s",
                            headers={"Retry-After": str(verdict.retry_after)})


async def authorize(request: Request, token: str | None, permission: Permission, *,
                    query_token: bool = False) -> Principal:
    """Authenticate the bearer token, apply the user's rate limit, then check ``permission``.

    ``query_token``: also take the token from ``?access_token=`` (streams only: see the module's doc).
    Without a token, the console's session cookie is used, and a change it authenticates needs the
    session's ``X-CSRF-Token`` and no foreign ``Origin`` (403 otherwise)."""
    state = request.app.state
    if not token and query_token:
        token = request.query_params.get("access_token")  # browsers' EventSource cannot send headers
    from_cookie = False
    if not token:
        token = request.cookies.get(SESSION_COOKIE)
        from_cookie = bool(token)
    if not token:
        raise unauthorized("not authenticated: send Authorization: Bearer <token> from POST /auth/token")
    cache: IdentityCache = state.identity_cache
    key = cache.key(token)
    principal = cache.get(key)
    if principal is None:
        generation = cache.generation
        principal = await cache.reads.run((key, generation), _principal_from_token, state.settings, token, cache,
                                          key, generation)
    request.state.user = principal.username
    if from_cookie:
        try:
            check_cookie_change(request, state.settings, token)
        except CsrfRefused as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
    await rate_limit(request, f"user:{principal.username}")
    if not principal.may(permission):
        raise HTTPException(status_code=403, detail=f"role {principal.role!r} lacks permission {permission.value!r}")
    return principal


async def limit_by_address(request: Request) -> None:
    """The rate limit for anonymous routes (the login, the MCP ping), keyed by client address."""
    await rate_limit(request, f"address:{client_address(request)}")


def require(permission: Permission, *, query_token: bool = False) -> Callable[..., object]:
    """A dependency that authenticates the caller, checks ``permission`` and applies the user's rate limit.

    ``query_token=True`` is for streaming routes a browser's EventSource opens: it may send the token as
    ``?access_token=``; every other route refuses a token there."""

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        return await authorize(request, token, permission, query_token=query_token)

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route-permission test
    return dependency


def require_core(principal: Principal, core_id: str) -> None:
    """A core may act only for itself."""
    if principal.core_id != core_id:
        raise HTTPException(status_code=403, detail=f"user {principal.username!r} may not act for core {core_id!r}")
