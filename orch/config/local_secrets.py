"""Secrets a local, zero-config setup needs but nobody provided: made once, kept 0600, never shown.

Production (``environment: production``) never reaches this module: there, a missing secret is a
configuration error, because a secret that changes when a data directory is wiped would silently log
everybody out and break every webhook sender.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from orch.config.errors import ConfigError
from orch.config.schema import Settings

SECRETS_FILE = "secrets.json"
GENERATED = ("jwt_secret", "webhook_secret", "mcp_token")  # settings.security.<name>
# settings.prefect.auth_string, kept under this key. ``user:password``: Prefect's UI asks for it in that form.
PREFECT_AUTH_KEY = "prefect_auth_string"


def fill_local_secrets(settings: Settings) -> Path:
    """Set every missing generated secret on ``settings`` from ``<data_dir>/secrets.json``.

    The Prefect auth string is generated only for the server ``orch up`` starts (no ``prefect.api_url``):
    an existing server has a string of its own, which can only be given, never guessed.
    """
    missing = [name for name in GENERATED if getattr(settings.security, name) is None]
    if settings.prefect.auth_string is None and settings.prefect.api_url is None:
        missing.append(PREFECT_AUTH_KEY)
    path = Path(settings.data_dir) / SECRETS_FILE
    if not missing:
        return path
    try:
        stored = _load_or_create(path, missing)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([f"data_dir: cannot write generated secrets to {path}: {reason}"]) from None
    for name in missing:
        if name == PREFECT_AUTH_KEY:
            settings.prefect.auth_string = SecretStr(stored[name])
        else:
            setattr(settings.security, name, SecretStr(stored[name]))
    return path


def _generate(name: str) -> str:
    token = secrets.token_urlsafe(32)
    return f"orch:{token}" if name == PREFECT_AUTH_KEY else token


def _load_or_create(path: Path, needed: list[str]) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(f".{path.name}.lock")):
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if (path.stat().st_mode & 0o077) and os.name == "posix":
                os.chmod(path, 0o600)
        absent = [name for name in needed if not stored.get(name)]
        if absent:
            stored.update({name: _generate(name) for name in absent})
            _write_private(path, json.dumps(stored, indent=2) + "\n")
    return stored


def _write_private(path: Path, text: str) -> None:
    """Write via a 0600 temporary file and an atomic rename: never a half-written or readable file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise processes that start together (``orch up`` children) so they agree on one secret."""
    try:
        import fcntl
    except ImportError:  # Windows: the rename above is still atomic; a race only regenerates once.
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
