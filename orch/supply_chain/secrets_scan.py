"""Secret scan: detect-secrets' detectors plus rules for ORCH's own secrets, against a baseline.

What is scanned: the repository's files (tracked and untracked-but-not-ignored, as git lists them), and
ORCH's data and log directories, where a leaked secret would end up. Binary files are skipped, and four
files by exact path (:func:`orch.supply_chain.scan.not_scanned`), each because it cannot hold a secret
someone wrote and would otherwise fail every scan:
- ``<data_dir>/secrets.json``: the one place ORCH keeps generated secrets on purpose (mode 0600);
- the baseline: SHA-1 hashes of accepted findings, which look random;
- the backup catalog (``catalog.json`` in the backup directory): written only by
  :mod:`orch.backup.catalog`, it holds each backup's SHA-256 digest, and its database URL with the
  password masked;
- Prefect's ``memo_store.toml`` in ``<data_dir>/prefect`` (the server's home under ``orch up``): written
  only by the Prefect server, one SHA-256 of its block registry.
Every other file there stays scanned with every rule: logs above all, and whatever a human may write or
copy in (a Prefect ``profiles.toml`` holding an API key, notes, exported configuration), even beside
those files and even when its content looks like theirs.

What is found:
- everything detect-secrets' default plugins and filters report (keywords, high-entropy strings,
  private keys, cloud and chat tokens, basic-auth URLs, JWTs ...);
- ORCH's secrets by name (``JWT_SECRET``, ``WEBHOOK_SECRET``, ``ORCH_MCP_TOKEN``, ``SMTP_PASSWORD`` and
  their YAML keys) with a literal value, and database/broker URLs with a password;
- the *actual* secret values of the running configuration, wherever they appear (logs above all).

A finding is the file, line, type and the SHA-1 of the secret (detect-secrets' ``hashed_secret``),
never the secret. The baseline is a detect-secrets baseline file; a finding is accepted when the
baseline lists the same file, type and hash (line numbers may move). A line carrying
``pragma: allowlist secret`` is skipped, as detect-secrets does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orch.supply_chain.files import write_atomic

ALLOWLIST_PRAGMA = "pragma: allowlist secret"
SKIPPED_NAMES = {"secrets.json"}
MAX_FILE_BYTES = 5 * 1024**2  # larger files (logs) get ORCH's line rules only, streamed
# Values that name or stand for a secret rather than being one: ${VAR}, $VAR, {field} (a format template),
# <...>, ***, an environment variable's name or a Python name (letters, underscores and dots only, maybe
# closing a call), CHANGE_ME.
_PLACEHOLDER = re.compile(r"^(?:\$\{[^}]*\}?|\$[A-Za-z_]+|\{[^}]*\}.*|<[^>]*>|\*+|[A-Za-z_]+(?:\.[A-Za-z_]+)*[)\]}]*)$")
ORCH_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ORCH JWT secret", re.compile(r"\b(?:JWT_SECRET|jwt_secret)\b[\"']?\s*[:=]\s*[\"']?([^\s\"'#,]{8,})")),
    ("ORCH webhook secret",
     re.compile(r"\b(?:WEBHOOK_SECRET|webhook_secret)\b[\"']?\s*[:=]\s*[\"']?([^\s\"'#,]{8,})")),
    ("ORCH MCP token", re.compile(r"\b(?:ORCH_MCP_TOKEN|mcp_token)\b[\"']?\s*[:=]\s*[\"']?([^\s\"'#,]{8,})")),
    ("SMTP password", re.compile(r"\bSMTP_PASSWORD\b\s*[:=]\s*[\"']?([^\s\"'#]{4,})")),
    ("DSN with password", re.compile(r"\b(?:postgres(?:ql)?|mysql|redis|rediss|amqp|mongodb)(?:\+\w+)?://"
                                     r"[^\s:/@\"']*:([^\s@/\"']+)@")),
)


@dataclass(frozen=True)
class Finding:
    filename: str
    line_number: int
    type: str
    hashed_secret: str

    def key(self) -> tuple[str, str, str]:
        return (self.filename, self.type, self.hashed_secret)


@dataclass
class SecretScanResult:
    new: list[Finding] = field(default_factory=list)
    accepted: list[Finding] = field(default_factory=list)
    files_scanned: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"new": [asdict(f) for f in self.new], "accepted": len(self.accepted),
                "files_scanned": self.files_scanned}


def secret_hash(value: str) -> str:
    """detect-secrets' ``hashed_secret``: SHA-1 of the secret (identifies it, does not reveal it)."""
    return hashlib.sha1(value.encode("utf-8"), usedforsecurity=False).hexdigest()


def repository_files(root: Path) -> list[Path]:
    """Files git would commit (tracked, plus untracked not ignored); every file when ``root`` is no checkout."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)
    names = sorted({name for name in listed.decode("utf-8", "replace").split("\0") if name})
    return [root / name for name in names if (root / name).is_file()]


def directory_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in SKIPPED_NAMES)


def scan(files: Iterable[Path], root: Path, baseline: Path | None = None,
         known_secrets: Iterable[str] = ()) -> SecretScanResult:
    """Scan ``files`` (names reported relative to ``root``); split findings into new and accepted."""
    accepted_keys = load_baseline(baseline) if baseline else set()
    result = SecretScanResult()
    known = {value: secret_hash(value) for value in known_secrets if len(value) >= 8}
    for finding in _findings(files, root, baseline, known, result):
        (result.accepted if finding.key() in accepted_keys else result.new).append(finding)
    return result


def _findings(files: Iterable[Path], root: Path, baseline: Path | None, known: dict[str, str],
              result: SecretScanResult) -> list[Finding]:
    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import default_settings

    found: dict[tuple[str, int, str], Finding] = {}
    with default_settings():
        for path in files:
            if baseline is not None and path.resolve() == baseline.resolve():
                continue
            lines = _lines(path)
            if lines is None:
                continue
            result.files_scanned += 1
            name = _relative(path, root)
            if path.stat().st_size <= MAX_FILE_BYTES:
                for secret in scan_file(str(path)):
                    if secret.secret_hash:
                        found.setdefault((name, secret.line_number, secret.secret_hash),
                                         Finding(name, secret.line_number, secret.type, secret.secret_hash))
            for number, line in enumerate(lines, start=1):
                if ALLOWLIST_PRAGMA in line:
                    continue
                for finding in _orch_rules(name, number, line, known):
                    found.setdefault((name, number, finding.hashed_secret), finding)
    return sorted(found.values(), key=lambda f: (f.filename, f.line_number, f.type))


def _orch_rules(name: str, number: int, line: str, known: dict[str, str]) -> Iterable[Finding]:
    for kind, pattern in ORCH_RULES:
        for match in pattern.finditer(line):
            value = match.group(1)
            if not _PLACEHOLDER.match(value):
                yield Finding(name, number, kind, secret_hash(value))
    for value, hashed in known.items():
        if value in line:
            yield Finding(name, number, "ORCH configured secret", hashed)


def _lines(path: Path) -> Iterable[str] | None:
    """The file's lines, or None for what cannot hold a readable secret (binary, unreadable).

    Files over ``MAX_FILE_BYTES`` (a long log) are read line by line and get ORCH's rules only:
    detect-secrets reads a whole file into memory, ORCH's rules and configured values need one line.
    """
    try:
        with path.open("rb") as handle:
            if b"\0" in handle.read(8192):
                return None
    except OSError:
        return None
    return _read_lines(path)


def _read_lines(path: Path) -> Iterable[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        yield from (line.rstrip("\n") for line in handle)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def load_baseline(path: Path) -> set[tuple[str, str, str]]:
    """Accepted findings as ``(file, type, hashed_secret)``; a missing baseline accepts nothing."""
    if not path.is_file():
        return set()
    try:
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
        return {(name, item["type"], item["hashed_secret"]) for name, items in results.items() for item in items}
    except (ValueError, KeyError, TypeError) as exc:
        from orch.supply_chain.errors import SupplyChainError

        raise SupplyChainError(f"{path}: not a detect-secrets baseline ({exc})") from None


def write_baseline(path: Path, findings: Iterable[Finding]) -> int:
    """Accept ``findings``: write them as a detect-secrets baseline (after a human reviewed them)."""
    from importlib.metadata import version

    from detect_secrets.settings import default_settings, get_settings

    with default_settings():
        active = get_settings()
        settings = {"plugins_used": [{"name": name} for name in sorted(active.plugins)],
                    "filters_used": [{"path": path} for path in sorted(active.filters)]}
    results: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for finding in sorted(findings, key=lambda f: (f.filename, f.line_number, f.type)):
        results.setdefault(finding.filename, []).append(
            {"type": finding.type, "filename": finding.filename, "hashed_secret": finding.hashed_secret,
             "is_verified": False, "line_number": finding.line_number})
        count += 1
    document = {"version": version("detect-secrets"), **settings, "results": results}
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    return count
