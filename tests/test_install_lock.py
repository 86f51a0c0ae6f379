"""The locks are what every install uses: complete, hashed, consistent with pyproject.toml, and installed.

A release anywhere must not change what ``make install`` (and so CI) or a production install puts in the
venv; these tests fail when pyproject.toml and the locks drift apart (run ``make lock``) or when the venv
the suite runs in was not installed from ``requirements-dev.lock``.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"


def _pins(lock: Path) -> dict[str, list[tuple[Requirement, int]]]:
    """name -> [(pinned requirement with its marker, number of hashes)]; universal locks may pin a name twice."""
    pins: dict[str, list[tuple[Requirement, int]]] = {}
    current: Requirement | None = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith(("#", "-")):
            current = Requirement(line.rstrip(" \\"))
            pins.setdefault(canonicalize_name(current.name), []).append((current, 0))
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            entries = pins[canonicalize_name(current.name)]
            entries[-1] = (entries[-1][0], entries[-1][1] + 1)
    return pins


def _pinned_version(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not an exact pin"
    return spec.version


def _declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = [Requirement(r) for r in project["project"]["dependencies"]]
    declared += [Requirement(r) for r in project["build-system"]["requires"]]
    for extra in extras:
        declared += [Requirement(r) for r in project["project"]["optional-dependencies"][extra]]
    return declared


@pytest.mark.parametrize(("lock", "extras"), [(LOCK, ()), (DEV_LOCK, ("dev",))], ids=["runtime", "dev"])
def test_every_declared_requirement_is_pinned_with_hashes_within_its_range(lock: Path, extras: tuple[str, ...]) -> None:
    pins = _pins(lock)
    assert pins, f"{lock.name} pins nothing"
    unhashed = [str(req) for entries in pins.values() for req, hashes in entries if hashes == 0]
    assert not unhashed, f"{lock.name}: pins without hashes: {unhashed}"
    problems = []
    for wanted in _declared(extras):
        entries = pins.get(canonicalize_name(wanted.name))
        if not entries:
            problems.append(f"{wanted} is not in {lock.name}")
            continue
        problems += [f"{wanted} is pinned at {_pinned_version(req)}" for req, _ in entries
                     if not wanted.specifier.contains(_pinned_version(req), prereleases=True)]
    assert not problems, "pyproject.toml and the lock disagree (run: make lock): " + "; ".join(problems)


def test_the_runtime_lock_pins_the_versions_the_dev_lock_tests() -> None:
    dev = {name: {(_pinned_version(r), str(r.marker)) for r, _ in entries} for name, entries in _pins(DEV_LOCK).items()}
    differing = [name for name, entries in _pins(LOCK).items()
                 if {(_pinned_version(r), str(r.marker)) for r, _ in entries} != dev.get(name)]
    assert not differing, f"requirements.lock pins these differently from requirements-dev.lock: {differing}"


def test_the_venv_the_suite_runs_in_was_installed_from_the_dev_lock() -> None:
    environment = default_environment()
    wrong = []
    for name, entries in _pins(DEV_LOCK).items():
        applicable = [req for req, _ in entries if req.marker is None or req.marker.evaluate(environment)]
        if not applicable:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if installed not in {_pinned_version(req) for req in applicable}:
            wrong.append(f"{name} {installed} (locked {_pinned_version(applicable[0])})")
    assert not wrong, "the venv differs from requirements-dev.lock (make install installs it): " + "; ".join(wrong)
