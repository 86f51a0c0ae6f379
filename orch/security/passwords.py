"""Password policy (the guide's ``password_policy``) and hashing.

Hashing uses the standard library's scrypt (memory-hard, no native dependency to build on Windows);
the stored form names its parameters so they can be raised later without invalidating old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from orch.config.schema import PasswordPolicySettings

_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def policy_problems(password: str, policy: PasswordPolicySettings) -> list[str]:
    """Every rule the password breaks, in words an operator can act on (empty list: acceptable)."""
    problems = []
    if len(password) < policy.min_length:
        problems.append(f"at least {policy.min_length} characters")
    if policy.require_uppercase and not any(c.isupper() for c in password):
        problems.append("an upper-case letter")
    if policy.require_lowercase and not any(c.islower() for c in password):
        problems.append("a lower-case letter")
    if policy.require_numbers and not any(c.isdigit() for c in password):
        problems.append("a number")
    if policy.require_symbols and not any(c in string.punctuation or c.isspace() for c in password):
        problems.append("a symbol")
    return problems


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    encode = base64.b64encode
    return f"{_SCHEME}${_N}${_R}${_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; a malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
