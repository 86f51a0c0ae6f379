"""Pure-ASGI middleware: security headers, access log and metrics, the request guard (NUL characters,
body size, JSON depth), maintenance mode.

Pure ASGI rather than ``BaseHTTPMiddleware`` because the latter costs a task and a memory stream per
request and buffers streaming responses, which would break SSE and halve ``/health`` throughput.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orch.dispatch.request import NON_FINITE_PROBLEM, NUL_PROBLEM, has_nul, non_finite, value_place
from orch.logging_config import get_logger

access_log = get_logger("orch.api.access")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Logging in to read is still allowed, and an admin must be able to turn maintenance mode off.
MAINTENANCE_EXEMPT = frozenset({("POST", "/auth/token"), ("PUT", "/maintenance-mode"), ("POST", "/ui/login"),
                                ("POST", "/ui/logout")})
MAINTENANCE_RETRY_AFTER = 300


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class AccessLogMiddleware:
    """One JSON log line and the HTTP metrics per request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.observe_request(method, endpoint, status, elapsed)
            state = scope.get("state") or {}
            client = scope.get("client")
            access_log.info(
                "%s %s %s", method, endpoint, status,
                extra={"event_type": "http_request", "method": method, "endpoint": endpoint,
                       "path": scope["path"], "status": status, "duration_ms": round(elapsed * 1000, 2),
                       "client": client[0] if client else None, "user": state.get("user")})


class RequestGuardMiddleware:
    """Refuse what the routes must never see, before any of them runs.

    - a NUL character in the path or the query string (422): PostgreSQL cannot store it in text, and the
      driver's error became a 500 wherever such a value reached a query (a username, a task id, a filter);
    - a body above ``max_body_bytes`` (413), whether it declares its length or streams it;
    - a JSON body nesting deeper than ``max_json_depth`` (422), judged by a byte scan before any
      recursive parser sees it (100,000 levels made the webhook's ``json.loads`` a RecursionError);
    - a JSON string with ``\\u0000`` or a lone surrogate, or a form field with a NUL (422), for the same
      reason as the path.

    Bodies of changes are read whole (at most ``max_body_bytes``) and handed on in one message, so every
    route, including the webhook that reads its raw body to check the signature, gets the checked bytes.
    """

    def __init__(self, app: ASGIApp, limit: int, max_json_depth: int) -> None:
        self.app = app
        self.limit = limit
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = unstorable_in_target(scope["path"], scope["query_string"])
        if problem:
            await send_json(send, 422, {"detail": "invalid request", "errors": [problem]})
            return
        if scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = body_problem(body, headers.get(b"content-type", b""), self.max_json_depth)
        if problem:
            await send_json(send, 422, {"detail": "invalid request", "errors": [problem]})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, for a route that waits for it

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes "
                                              "(api.max_body_bytes)"})


SURROGATE_PROBLEM = "contains a lone UTF-16 surrogate, which is not text"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))
# An escape preceded by an even number of backslashes is an escape, not text: \\u0000 is not a NUL.
_UNESCAPED = rb"(?<!\\)(?:\\\\)*\\u"
_NUL_ESCAPE = re.compile(_UNESCAPED + rb"0000")
_SURROGATE_ESCAPE = re.compile(_UNESCAPED + rb"[dD][89a-fA-F]")
# What may be a number beyond a double's range (Python's parser reads 1e309 as Infinity): a three-digit
# exponent or 300 digits in a row; the body is then parsed to see whether one is.
_HUGE_NUMBER = re.compile(rb"[0-9][eE][+]?[0-9]{3}|[0-9]{300}")


def unstorable_in_target(path: str, query: bytes) -> str | None:
    """Where the path or the query string carries a NUL (``%00``), as an ``errors`` line, or None."""
    if "\x00" in path:
        return f"path: {NUL_PROBLEM}"
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name + value:
                return f"query.{name.replace(chr(0), '')}: {NUL_PROBLEM}"
    return None


def body_problem(body: bytes, content_type: bytes, max_depth: int) -> str | None:
    """The first reason a body must be refused, as an ``errors`` line, or None."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    if kind == b"application/x-www-form-urlencoded":
        if b"%00" in body or b"\x00" in body:
            for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
                if "\x00" in name + value:
                    return f"form.{name.replace(chr(0), '')}: {NUL_PROBLEM}"
        return None
    if kind == b"multipart/form-data":  # no route takes files: a NUL is in a field
        return f"form: {NUL_PROBLEM}" if b"\x00" in body else None
    # Anything else is parsed as JSON by FastAPI (no content type included) or by the webhook.
    if json_depth_exceeds(body, max_depth):
        return f"body: JSON nests deeper than {max_depth} levels (api.max_json_depth)"
    if (b"NaN" in body or b"Infinity" in body or _HUGE_NUMBER.search(body)) and (
            found := _json_value(body, non_finite)) is not None:  # (in a string they are only text)
        return f"{found[0]}: {NON_FINITE_PROBLEM}"
    if b"\\u" not in body:  # no escapes at all: the usual body, one search
        return None
    if _NUL_ESCAPE.search(body):
        return f"{_json_place(body, has_nul)}: {NUL_PROBLEM}"
    if _SURROGATE_ESCAPE.search(body):
        return _lone_surrogate(body)
    return None


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether the brackets outside strings nest deeper than ``max_depth``, in linear time and in C.

    Fewer brackets than the limit cannot nest deeper (the common case: two counts). Otherwise strings are
    blanked, everything but brackets dropped, and one regular expression of ``max_depth`` nested
    possessive groups must match all of what is left (no backtracking, so linear: 1 MB of brackets in
    about 15 ms). Unclosed openers are closed first, because a parser recurses into ``[[[[`` before it
    finds the end missing; a bracket string that is not JSON may be called too deep, still a 422.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    unclosed = brackets.count(b"(") - brackets.count(b")")
    if unclosed > max_depth:
        return True
    brackets += b")" * max(unclosed, 0)
    return _nesting(max_depth).match(brackets).end() != len(brackets)


@functools.cache
def _nesting(depth: int) -> re.Pattern[bytes]:
    """Brackets nested at most ``depth`` deep, with stray closers allowed (a parser stops at those)."""
    inner = b""
    for _ in range(depth - 1):
        inner = rb"(?:\(" + inner + rb"\))*+"
    return re.compile(rb"(?:\(" + inner + rb"\)|\)++)*+")


def _json_place(body: bytes, bad: Callable[[Any], bool]) -> str:
    """``body.<path>`` of the first key or scalar for which ``bad`` holds; ``body`` if none is found (the
    body is not JSON after all). Only called for a body already refused, whose depth is bounded."""
    found = _json_value(body, bad)
    return found[0] if found else "body"


def _json_value(body: bytes, bad: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """``(body.<path>, what)`` of the first key or scalar of the JSON ``body`` for which ``bad`` holds; None
    when there is none or the body is not JSON. Only called once the body's depth is known to be bounded."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return value_place(document, "body", bad)


def _lone_surrogate(body: bytes) -> str | None:
    """A surrogate escape may be half of a valid pair (an emoji from an ASCII-only encoder): only a string
    that cannot be encoded as UTF-8 holds a lone one."""
    def unencodable(text: object) -> bool:
        if not isinstance(text, str):
            return False
        try:
            text.encode()
        except UnicodeEncodeError:
            return True
        return False

    place = _json_place(body, unencodable)
    return None if place == "body" else f"{place}: {SURROGATE_PROBLEM}"


class MaintenanceMiddleware:
    """While maintenance mode is on (:mod:`orch.maintenance_mode`), changes answer 503 + Retry-After saying
    who turned it on and why; reads, health, logins and the switch itself work.

    Only changes look at the switch, through the app's cached copy: the database is read (in a thread, not
    on the event loop) at most once a second, never once per request, and once however many requests
    find the copy too old at the same moment (:mod:`orch.api.single_flight`).
    """

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        from orch import maintenance_mode  # the database layer, loaded only by the app that uses it
        from orch.api.single_flight import SingleFlight

        self.app = app
        self.settings = settings
        self.mode = maintenance_mode
        self.reads = SingleFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in WRITE_METHODS
                and (scope["method"], scope["path"]) not in MAINTENANCE_EXEMPT):
            switch = self.mode.for_app(scope["app"])
            current = switch.cached() or await self.reads.run(switch, switch.state)
            if current["on"]:
                await send_json(send, 503, {
                    "detail": f"ORCH-Next is in maintenance mode ({self.mode.describe(current)}): changes "
                              "are refused until an admin turns it off (PUT /maintenance-mode, or orch maintenance "
                              "mode off); reads and health keep working"},
                    {"Retry-After": str(MAINTENANCE_RETRY_AFTER)})
                return
        await self.app(scope, receive, send)


SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY")]
# The HTML is the console (/ui/) and /docs, /redoc: every script, style and image comes from this origin
# (the docs' from fastapi_offline's files), plus the docs' one inline script allowed by its hash (added
# per page); nothing may frame a page, post forms elsewhere or change its base. ReDoc alone writes its
# styles into <style> elements at run time (styled-components: it stops with "error #17" when it cannot)
# and runs its search in a worker made from a blob of its own script, so /redoc alone may do both; still
# nothing from elsewhere (its footer's logo from cdn.redoc.ly is refused, and it hides the image).
HTML_POLICY = ("default-src 'none'; script-src 'self'{hashes}; style-src 'self'{extra_style}; "
               "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
               "frame-ancestors 'none'{extra}")
REDOC_ALLOWANCES = {"extra_style": " 'unsafe-inline'", "extra": "; worker-src blob:"}
PAGE_ALLOWANCES = {"/redoc": REDOC_ALLOWANCES}
_NO_ALLOWANCE = {"extra_style": "", "extra": ""}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


class SecurityHeadersMiddleware:
    """``nosniff``, ``no-referrer`` and ``DENY`` framing on every response, and a Content-Security-Policy on
    HTML, whose inline scripts are allowed by their SHA-256 (so the policy needs no ``unsafe-inline``).

    HTML responses (console pages and the docs, tens of KB) are held until their body is complete to hash
    it; every other response, SSE included, passes through untouched but for the headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        parts: list[bytes] = []

        async def secured_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _SECURITY_NAMES]
                message = {**message, "headers": headers + SECURITY_HEADERS}
                if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(parts)
                gzipped = (b"content-encoding", b"gzip") in held["headers"]  # GZip runs inside this
                policy = _policy(gzip.decompress(body) if gzipped else body,
                                 PAGE_ALLOWANCES.get(scope["path"], _NO_ALLOWANCE))
                await send({**held, "headers": [*held["headers"], (b"content-security-policy", policy)]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self.app(scope, receive, secured_send)


_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS) | {b"content-security-policy"}


def _policy(html: bytes, allowances: dict[str, str] = _NO_ALLOWANCE) -> bytes:
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                     for script in _INLINE_SCRIPT.findall(html))
    return HTML_POLICY.format(hashes=hashes, **allowances).encode()
