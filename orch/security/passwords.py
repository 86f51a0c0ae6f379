"""Password policy (the guide's ``password_policy``) and hashing.

New hashes are argon2id (argon2-cffi) with OWASP's first-listed parameters, 19 MiB, 2 passes, 1 lane:
about 25 ms on one core, so a login stays far under its 150 ms goal, and 19 MiB per concurrent hash
keeps a burst of logins (the API's thread pool runs 40 at once) from costing gigabytes. Hashes from
before (``scrypt$N$r$p$salt$digest``, N=2^14, below OWASP's floor for scrypt) still verify, and
:func:`needs_rehash` tells the login to replace them, like argon2 hashes made with older parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from orch.config.schema import PasswordPolicySettings

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)  # argon2id, memory in KiB
_LEGACY_SCHEME = "scrypt"


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
    """An argon2id hash in the PHC string form (``$argon2id$v=19$m=...``), parameters included."""
    return HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; a malformed or unknown stored hash never matches."""
    if stored.startswith(f"{_LEGACY_SCHEME}$"):
        return _verify_scrypt(password, stored)
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):  # a mismatch is a VerificationError
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash made another way than :data:`HASHER` would make it now (scrypt, older argon2)."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
