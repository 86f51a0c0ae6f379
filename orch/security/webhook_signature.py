"""Webhook signatures: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``.

Signing the timestamp with the body lets the receiver refuse old deliveries (a captured request
cannot be replayed next week), and the v1 digest doubles as the delivery's identity for refusing a
replay within the tolerance window (see the ``webhook_deliveries`` table). Senders use :func:`sign`.

Several secrets may be valid at once (the shared one and each core's own): :func:`verify` tells which
one signed, so the receiver knows *who* sent the delivery, not only that someone with a secret did.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from orch.errors import OrchError

FUTURE_SKEW_SECONDS = 5  # clocks of sender and receiver may differ a little; not minutes
_HEADER = re.compile(r"^t=(?P<t>\d{1,12}),v1=(?P<v1>[0-9a-fA-F]{64})$")


class SignatureError(OrchError):
    """The delivery is not acceptable; the message says which check failed (never the secret)."""

    status_code = 401


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Signature`` header value for ``body`` sent at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secrets: Mapping[str | None, str], header: str | None, body: bytes, *, tolerance: int,
           now: float | None = None) -> tuple[str | None, str]:
    """Return who signed ``body`` and the delivery's digest when the signature is fresh; raise otherwise.

    ``secrets`` maps a signer (a core's id; ``None`` for the shared secret) to its secret; the first one
    whose HMAC matches is the signer, so a caller lists the shared secret first to fail closed should
    a core's secret equal it.
    """
    if not header:
        raise SignatureError("missing X-Signature header")
    match = _HEADER.match(header.strip())
    if match is None:
        raise SignatureError("malformed X-Signature header; expected t=<unix seconds>,v1=<64 hex digits>")
    timestamp, given = int(match["t"]), match["v1"].lower()
    signed = f"{timestamp}.".encode() + body
    signers = [signer for signer, secret in secrets.items()  # every one checked: the time says nothing
               if hmac.compare_digest(hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest(), given)]
    if not signers:
        raise SignatureError("signature does not match the body")
    current = time.time() if now is None else now
    if timestamp > current + FUTURE_SKEW_SECONDS:
        raise SignatureError("signature timestamp is in the future")
    if current - timestamp > tolerance:
        raise SignatureError(f"signature timestamp is older than {tolerance} s")
    return signers[0], given
