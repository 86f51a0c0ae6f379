"""The console's session: the API's own JWT in an HttpOnly cookie, and the CSRF token bound to it.

The cookie holds exactly the token ``POST /auth/token`` issues, so a console session is checked, revoked
and rate-limited like any API token (:func:`orch.api.deps.authorize`). A browser sends that cookie on its
own, so a request it authenticates may change something only when it also proves it was sent by a page
of this origin: an ``X-CSRF-Token`` header equal to :func:`csrf_token` of the session (an HMAC of the
token's digest under the JWT secret: nothing stored, bound to that one session, useless with another),
and, when the browser names an ``Origin``, that origin being this one. Bearer-token clients send no
cookie and need neither.

This module imports nothing of the API's, so :mod:`orch.api.deps` can use it.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from orch.config.schema import Settings

SESSION_COOKIE = "orch_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/ui/login"
HOME_PATH = "/ui/"


class CsrfRefused(Exception):
    """A cookie-authenticated change without the proof that this origin's page sent it (403)."""


def csrf_token(settings: Settings, session_token: str) -> str:
    """The CSRF token of one session; stateless, so every API replica derives the same one."""
    secret = settings.security.jwt_secret
    key = secret.get_secret_value().encode() if secret else b""
    digest = hashlib.sha256(session_token.encode()).digest()
    return hmac.new(key, b"orch-console-csrf:" + digest, hashlib.sha256).hexdigest()


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_origin(request: Request) -> None:
    """Refuse a change whose browser says it comes from another origin (no Origin header: not a browser
    form or fetch from elsewhere, since browsers send it on every cross-origin change)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        raise CsrfRefused(f"cross-origin request refused (Origin {origin[:100]!r})")


def check_cookie_change(request: Request, settings: Settings, session_token: str) -> None:
    """Raise :class:`CsrfRefused` unless a cookie-authenticated request is safe or carries the proof."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), csrf_token(settings, session_token).encode()):
        raise CsrfRefused("CSRF token missing or wrong")


def set_session(response: Response, request: Request, token: str, lifetime: int) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=lifetime, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of this site under ``/ui/``, never another site.

    ``//evil.example`` and ``/\\evil.example`` are other sites to a browser; a scheme or host is refused
    outright, as is anything outside the console."""
    if not value or len(value) > 2000 or "\\" in value or any(ord(c) < 0x20 for c in value):
        return HOME_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/ui/") or value.startswith("//"):
        return HOME_PATH
    if parts.path == LOGIN_PATH:
        return HOME_PATH
    return value


def login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{LOGIN_PATH}?next={quote(safe_next(here), safe='')}"


def wants_html(request: Request) -> bool:
    """A browser navigating asks for HTML; an API client (or a test) asking for anything gets JSON."""
    return "text/html" in request.headers.get("accept", "")
