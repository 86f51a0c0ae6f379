"""JWT access tokens: HS256 only, signed with ``security.jwt_secret``, short-lived.

Decoding names exactly one algorithm, so ``alg: none`` and algorithm-confusion tokens are refused by
PyJWT before the signature is even considered; ``exp``, ``iat``, ``nbf``, ``sub`` and ``ver`` are required.

``ver`` is the user's ``token_version`` when the token was issued; the API compares it with the stored
one on every identity check, so a change of password, role or state revokes the tokens issued before it.
A token without it (issued before the claim existed) is refused: it lives at most ``jwt_expiry``, and
logging in again is the whole cost, where accepting it would keep a token alive that a change meant to end.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from orch.config.schema import SecuritySettings
from orch.errors import OrchError
from orch.lean_imports import jwt_without_cryptography

jwt = jwt_without_cryptography()  # HS256 needs none of PyJWT's cryptography (orch.lean_imports)

ALGORITHM = "HS256"
ISSUER = "orch-next"


class TokenError(OrchError):
    """The token is unusable; the message says why without echoing the token."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    expires_at: int
    version: int


def _secret(security: SecuritySettings) -> str:
    if security.jwt_secret is None:
        raise TokenError("security.jwt_secret is not configured")
    return security.jwt_secret.get_secret_value()


def issue_token(security: SecuritySettings, username: str, role: str, version: int) -> tuple[str, int]:
    """A signed token for ``username`` at ``token_version`` ``version``; returns it with its lifetime in
    seconds."""
    now = int(time.time())
    claims = {"sub": username, "role": role, "ver": version, "iat": now, "nbf": now,
              "exp": now + security.jwt_expiry, "iss": ISSUER, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, _secret(security), algorithm=ALGORITHM), security.jwt_expiry


def decode_token(security: SecuritySettings, token: str) -> TokenClaims:
    """Verify signature, algorithm, issuer and time claims; raise :class:`TokenError` otherwise."""
    try:
        claims = jwt.decode(token, _secret(security), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "nbf", "sub", "iss", "ver"]}, leeway=5)
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
    subject, role, version = claims.get("sub"), claims.get("role"), claims.get("ver")
    if not isinstance(subject, str) or not isinstance(role, str) or type(version) is not int:
        raise TokenError("token malformed")
    return TokenClaims(username=subject, role=role, expires_at=int(claims["exp"]), version=version)
