"""The CycloneDX 1.6 SBOM of the installed environment, with this project as the root component.

Built in-process by cyclonedx-bom's own environment builder (the code behind ``cyclonedx-py
environment``) over this interpreter's ``sys.path``, so it lists exactly what ``cyclonedx-py
environment`` lists without starting a second Python, then validated by :mod:`.schema_check`. The
builder lives in cyclonedx-bom's ``_internal`` package, so pyproject.toml pins the major version the
tests ran against.

Reproducible: for an unchanged environment the bytes are identical. The serial number is derived from
the content (a UUIDv5 of its SHA-256), and the timestamp is ``SOURCE_DATE_EPOCH`` when set (the
reproducible-builds convention), else the time the newest installed distribution was installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orch.supply_chain.errors import SupplyChainError
from orch.supply_chain.files import write_atomic

SPEC_VERSION = "1.6"
_SERIAL_NAMESPACE = uuid.UUID("6b1f0c1e-3f5a-5b8e-9a59-6f7263682d6e")


def build_sbom(pyproject: Path) -> bytes:
    """The SBOM as JSON bytes, validated; raises :class:`SupplyChainError` when it is not valid."""
    if not pyproject.is_file():
        raise SupplyChainError(f"{pyproject}: no pyproject.toml (the root component comes from it)")
    document = _without_root_copies(json.loads(_serialise(pyproject)))
    document["metadata"]["timestamp"] = _timestamp()
    document["serialNumber"] = ""
    digest = hashlib.sha256(_dump(document)).hexdigest()
    document["serialNumber"] = f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, digest)}"
    problems = validation_errors(document)
    if problems:
        raise SupplyChainError("generated SBOM is not valid CycloneDX 1.6: " + "; ".join(problems))
    return _dump(document)


def write_sbom(pyproject: Path, out: Path) -> dict[str, Any]:
    """Build, validate and write the SBOM atomically; returns what an operator wants to see."""
    data = build_sbom(pyproject)
    write_atomic(out, data)
    document = json.loads(data)
    return {"path": str(out), "components": len(document.get("components", [])),
            "root": f"{document['metadata']['component']['name']}@{document['metadata']['component']['version']}",
            "sha256": hashlib.sha256(data).hexdigest(), "serial_number": document["serialNumber"]}


def validation_errors(document: dict[str, Any]) -> list[str]:
    """Schema problems of a CycloneDX 1.6 document (empty when valid)."""
    from orch.supply_chain.schema_check import schema_errors

    if document.get("specVersion") != SPEC_VERSION:
        return [f"specVersion: expected {SPEC_VERSION}, got {document.get('specVersion')!r}"]
    return schema_errors(document, SPEC_VERSION)


def _serialise(pyproject: Path) -> str:
    from cyclonedx.model.component import ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx_py._internal.environment import EnvironmentBB

    # The builder logs every package at INFO; nothing an operator needs.
    builder = EnvironmentBB(logger=logging.getLogger("orch.supply_chain.cyclonedx"), gather_license_texts=False)
    bom = builder(import_site=False, python=None, pyproject_file=str(pyproject), mc_type=ComponentType.APPLICATION)
    return str(JsonV1Dot6(bom).output_as_string())


def _without_root_copies(document: dict[str, Any]) -> dict[str, Any]:
    """Drop stray copies of the project's own distribution from the component list.

    A source checkout holds build metadata (``orch_next.egg-info``) beside the installed one; when the
    checkout is on ``sys.path`` (a flow run, pytest) the builder sees both and replaces only one of them
    by the root component.
    """
    root = _normalise(document["metadata"]["component"]["name"])
    strays = {c["bom-ref"] for c in document.get("components", []) if _normalise(c["name"]) == root}
    if strays:
        document["components"] = [c for c in document["components"] if c["bom-ref"] not in strays]
        document["dependencies"] = [
            {**d, "dependsOn": [r for r in d.get("dependsOn", []) if r not in strays]}
            if "dependsOn" in d else d
            for d in document.get("dependencies", []) if d["ref"] not in strays]
    return document


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _timestamp() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        moment = float(epoch)
    else:
        moment = max((_installed_at(path) for path in sys.path if path), default=0.0)
    return datetime.fromtimestamp(int(moment), tz=timezone.utc).isoformat()


def _installed_at(entry: str) -> float:
    """Newest mtime among the ``*.dist-info`` directories on one ``sys.path`` entry (0 if none)."""
    try:
        with os.scandir(entry) as found:
            return max((item.stat().st_mtime for item in found if item.name.endswith(".dist-info")), default=0.0)
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return 0.0
