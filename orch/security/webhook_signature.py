"""Webhook signatures: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``.

Signing the timestamp with the body lets the receiver refuse old deliveries (a captured request
cannot be replayed next week), and the v1 digest doubles as the delivery's identity for refusing a
replay within the tolerance window (see the ``webhook_deliveries`` table). Senders use :func:`sign`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

FUTURE_SKEW_SECONDS = 5  # clocks of sender and receiver may differ a little; not minutes
_HEADER = re.compile(r"^t=(?P<t>\d{1,12}),v1=(?P<v1>[0-9a-fA-F]{64})$")


class SignatureError(Exception):
    """The delivery is not acceptable; the message says which check failed (never the secret)."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Signature`` header value for ``body`` sent at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str | None, body: bytes, *, tolerance: int, now: float | None = None) -> str:
    """Return the delivery's digest when ``header`` signs ``body`` freshly; raise otherwise."""
    if not header:
        raise SignatureError("missing X-Signature header")
    match = _HEADER.match(header.strip())
    if match is None:
        raise SignatureError("malformed X-Signature header; expected t=<unix seconds>,v1=<64 hex digits>")
    timestamp, given = int(match["t"]), match["v1"].lower()
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match the body")
    current = time.time() if now is None else now
    if timestamp > current + FUTURE_SKEW_SECONDS:
        raise SignatureError("signature timestamp is in the future")
    if current - timestamp > tolerance:
        raise SignatureError(f"signature timestamp is older than {tolerance} s")
    return given
