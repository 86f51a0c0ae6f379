"""JWT access tokens: HS256 only, signed with ``security.jwt_secret``, short-lived.

Decoding names exactly one algorithm, so ``alg: none`` and algorithm-confusion tokens are refused by
PyJWT before the signature is even considered; ``exp``, ``iat``, ``nbf`` and ``sub`` are required.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from orch.config.schema import SecuritySettings

ALGORITHM = "HS256"
ISSUER = "orch-next"


class TokenError(Exception):
    """The token is unusable; the message says why without echoing the token."""


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    expires_at: int


def _secret(security: SecuritySettings) -> str:
    if security.jwt_secret is None:
        raise TokenError("security.jwt_secret is not configured")
    return security.jwt_secret.get_secret_value()


def issue_token(security: SecuritySettings, username: str, role: str) -> tuple[str, int]:
    """A signed token for ``username``; returns it with its lifetime in seconds."""
    now = int(time.time())
    claims = {"sub": username, "role": role, "iat": now, "nbf": now, "exp": now + security.jwt_expiry,
              "iss": ISSUER, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, _secret(security), algorithm=ALGORITHM), security.jwt_expiry


def decode_token(security: SecuritySettings, token: str) -> TokenClaims:
    """Verify signature, algorithm, issuer and time claims; raise :class:`TokenError` otherwise."""
    try:
        claims = jwt.decode(token, _secret(security), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "nbf", "sub", "iss"]}, leeway=5)
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token not valid yet") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"token algorithm not allowed (only {ALGORITHM})") from None
    except jwt.InvalidSignatureError:
        raise TokenError("token signature invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise TokenError("token malformed") from None
    subject, role = claims.get("sub"), claims.get("role")
    if not isinstance(subject, str) or not isinstance(role, str):
        raise TokenError("token malformed")
    return TokenClaims(username=subject, role=role, expires_at=int(claims["exp"]))
