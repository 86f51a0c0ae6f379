"""The one masking rule: what counts as a secret in text and in structured data, and how it is masked.

Every log line (:class:`orch.log_handlers.RedactingFilter`), the SSE stream, the audit trail and every API
response carrying task params, metadata, results, errors or events pass through here, so what one shows
masked no other shows in clear. Two kinds of rule: patterns (URL passwords, bearer tokens, JWTs,
``key=value`` under a sensitive key name) and secrets registered by value (:func:`register_secret`), for
the random strings no pattern can recognise.

This module is imported by everything, so it imports nothing but the standard library.
"""

from __future__ import annotations

import datetime
import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SENSITIVE = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "cookie",
              "credential", "private_key", "signature")
_MIN_SECRET_LENGTH = 8
_MAX_DEPTH = 8  # deeper (or self-referencing) extras are redacted as text instead of recursed into
DATA_DEPTH = 100  # JSON data (a tree, never self-referencing) is recursed this deep; API bodies are shallower

_KEY_HINTS = tuple(name.replace("_", "") for name in _SENSITIVE)  # what _KEY_NAMES can match, squashed
_KEY_NAMES = "|".join(name.replace("_", "[_-]?") for name in _SENSITIVE)
# Patterns start with a look-behind pinning them to the start of a word, and URL parts are length-capped:
# otherwise a long blob (base64, a compact JSON dump) is rescanned from every position, which is quadratic.
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]{0,256}:)[^\s@]{1,256}@"
)
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(?P<keep>bearer\s+)[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)
_KEY_VALUE = re.compile(
    rf"""(?<![\w.-])(?P<keep>["']?(?=[\w.-]*?(?:{_KEY_NAMES}))[\w.-]+["']?\s*[:=]\s*)"""
    # An unterminated quote masks to the end of the text rather than leak what follows it.
    r"""(?:(?:bearer|basic|token|digest)\s+)?(?P<value>"[^"]*"?|'[^']*'?|[^\s,;&"'}\])]+)""",
    re.IGNORECASE,
)
_PLAIN = (bool, int, float, type(None), datetime.date, datetime.time, datetime.timedelta)

_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask every later occurrence of ``value`` in log output, wherever it appears.

    Patterns cannot recognise a bare secret (a webhook secret is just a random string), so the loaded
    secrets are registered by value. Values under 8 characters are ignored: masking every "admin" or
    "1234" in the logs would destroy them while protecting nothing.
    """
    global _secrets
    if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def redact(text: str) -> str:
    """Mask registered secrets, URL passwords, bearer tokens, JWTs and ``key=value`` secrets in ``text``.

    Every log line and SSE message passes through here, so each pattern runs only when the text holds
    what a match needs (``://``, ``eyJ``, ``bearer``, a sensitive key name beside ``:`` or ``=``): the
    same result as running them all, at a fraction of the cost for ordinary text. Non-ASCII text gets
    every pattern, because case-insensitive matching can pair a non-ASCII letter with an ASCII one.
    """
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if not text.isascii():
        return _apply_patterns(text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<keep>{MASK}", text)
    if ("=" in text or ":" in text) and _names_sensitive_key(lowered):
        text = _KEY_VALUE.sub(_mask_value, text)
    return text


def _apply_patterns(text: str) -> str:
    """Every pattern, unconditionally: the reference the fast path of :func:`redact` must agree with."""
    text = _URL_CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(rf"\g<keep>{MASK}", text)
    return _KEY_VALUE.sub(_mask_value, text)


def _names_sensitive_key(lowered: str) -> bool:
    """Whether ``lowered`` contains a sensitive key name, spelt with ``_``, ``-`` or nothing between its parts."""
    squashed = lowered.replace("_", "").replace("-", "")
    return any(hint in squashed for hint in _KEY_HINTS)


def _mask_value(match: re.Match[str]) -> str:
    """Keep the quotes of a quoted value so JSON and repr() output keeps its shape."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('keep')}{quote}{MASK}{quote}"


@functools.lru_cache(maxsize=4096)  # the same few extra= keys come with every record
def _is_sensitive(key: str) -> bool:
    return _names_sensitive_key(key.lower())  # as the text rule spells them: "privatekey" too


def redact_structure(value: Any, *, max_depth: int = DATA_DEPTH) -> Any:
    """``value`` with every secret :func:`redact` finds masked, and every value under a sensitive key
    (``password``, ``token``, ...) replaced by ``***``; dicts and lists keep their shape.

    The one masking rule for structured data: log ``extra=`` fields, the SSE stream and every API
    response carrying task params, metadata, results, errors or events go through here, so what one
    shows masked no other shows in clear. Keys are redacted too (a URL with a password can be a key).
    Containers deeper than ``max_depth`` are masked as their text instead of recursed into: log
    extras may reference themselves, and no caller may hit the recursion limit. Linear in the size.
    """
    return _redact_value(value, max_depth)


class MaskedRecords(list):  # type: ignore[type-arg]
    """Records :func:`redact_records` masked: a later pass over a structure holding them (the audit trail's
    line of the entry they are in) takes them as they are. Nothing outside this module makes one."""

    __slots__ = ()


def redact_records(records: list[dict[str, Any]], fields: tuple[str, ...]) -> MaskedRecords:
    """``records`` with the values of ``fields`` masked as :func:`redact_structure` masks them, and the other
    values as they are: for records whose other fields the caller made or validated (ids, identifiers,
    numbers), where masking them too was most of the cost of recording a batch of tasks."""
    return MaskedRecords({key: _redact_value(value, DATA_DEPTH) if key in fields else value
                          for key, value in record.items()} for record in records)


def redact_field(key: str, value: Any) -> Any:
    """One ``extra=`` field of a log record: masked whole under a sensitive key, else redacted to a
    shallow depth (a record's extras may reference themselves)."""
    return MASK if _is_sensitive(key) else _redact_value(value, _MAX_DEPTH)


def _redact_value(value: Any, depth_left: int) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN):
        return value
    if depth_left > 0 and isinstance(value, Mapping):
        return {(redact(key) if isinstance(key, str) else key):
                MASK if _is_sensitive(str(key)) else _redact_value(item, depth_left - 1)
                for key, item in value.items()}
    if depth_left > 0 and isinstance(value, (list, tuple, set, frozenset)):
        if type(value) is MaskedRecords:
            return value
        return [_redact_value(item, depth_left - 1) for item in value]
    # Any other object reaches the log through str(); keep it as is unless that text leaks something.
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object whose str() fails is logged as it is, not as a crash
        return value
    cleaned = redact(text)
    return value if cleaned == text else cleaned
