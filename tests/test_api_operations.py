"""``/backups`` and ``/supply-chain``: the real backup code on SQLite and PostgreSQL, and a real SBOM,
signature and security report on disk."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import Api

from orch.backup.catalog import Catalog
from orch.backup.create import create_backup
from orch.backup.files import backup_dir
from orch.config.schema import Settings

ROOT = Path(__file__).resolve().parents[1]


def backups(api: Api, role: str = "viewer") -> dict[str, Any]:
    response = api.client.get("/backups", headers=api.headers(role))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def verify(api: Api, name: str, role: str = "operator") -> Any:
    return api.client.post(f"/backups/{name}/verify", headers=api.headers(role))


def test_backups_newest_first_with_their_verification(api_factory: Callable[..., Api], database_url: str) -> None:
    api = api_factory(database_url)
    assert backups(api)["backups"] == [] and backups(api)["newest_verified"] is None
    older = create_backup(api.settings, "manual")
    newer = create_backup(api.settings, "daily")
    directory = backup_dir(api.settings)
    engine = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    stray = "stray.db.gz" if engine == "sqlite" else "stray.dump"
    (directory / stray).write_bytes(b"copied in by hand")

    listing = backups(api)
    assert (listing["directory"], listing["engine"]) == (str(directory), engine)
    assert [b["file"] for b in listing["backups"]] == [newer["file"], older["file"], stray]
    first = listing["backups"][0]
    assert first["verified"] is True and first["verified_at"] and first["verification_failed"] is None
    assert (first["engine"], first["kind"], first["created_at"], first["size_bytes"]) == (
        engine, "daily", newer["created_at"], newer["size_bytes"])
    assert listing["backups"][2]["cataloged"] is False and listing["backups"][2]["verified"] is False
    assert listing["newest_verified"] == newer["file"]

    good = directory / newer["file"]
    kept = directory.parent / "kept-copy"
    shutil.copyfile(good, kept)
    good.write_bytes(b"\x00garbage\xff" * 64)
    failed = verify(api, newer["file"])
    assert failed.status_code == 200, failed.text
    body = failed.json()
    assert body["file"] == newer["file"] and body["verified"] is False
    assert "does not match its catalog checksum" in body["verification_failed"]["reason"]
    assert Catalog(directory).find(newer["file"])["verified"] is False  # recorded as `orch backup verify` does
    listing = backups(api)
    assert listing["newest_verified"] == older["file"] and listing["backups"][0]["verification_failed"]

    shutil.copyfile(kept, good)  # put back: it counts again once it verifies again
    again = verify(api, newer["file"])
    assert again.status_code == 200 and again.json()["verified"] is True
    assert again.json()["verification_failed"] is None and backups(api)["newest_verified"] == newer["file"]


def test_verify_refuses_paths_unknown_files_and_viewers(api: Api) -> None:
    entry = create_backup(api.settings, "manual")
    (backup_dir(api.settings).parent / "x.db.gz").write_bytes(b"outside")
    for name in ("..%2Fx.db.gz", "%2E%2E", "a%2Fb.db.gz", "%2Fetc%2Fpasswd"):
        refused = verify(api, name)
        assert refused.status_code == 422, (name, refused.text)
        assert "backup file name" in refused.json()["detail"] or "outside" in refused.json()["detail"]
    for name in ("nope.db.gz", "catalog.json", "latest"):
        missing = verify(api, name)
        assert missing.status_code == 404, (name, missing.text)
        assert "no backup named" in missing.json()["detail"]
    assert verify(api, entry["file"], role="viewer").status_code == 403
    assert verify(api, entry["file"], role="operator").json()["verified"] is True

    audit = api.client.get("/audit", params={"action": "backup.verify"}, headers=api.headers("admin"))
    assert [(e["username"], e["resource_id"], e["success"]) for e in audit.json()["entries"]] == [
        ("oscar", entry["file"], True)]


@pytest.fixture
def chain_api(api_factory: Callable[..., Api], tmp_path: Path) -> Api:
    def place(settings: Settings) -> None:
        settings.supply_chain.sbom_path = str(tmp_path / "sbom" / "sbom.json")
        settings.supply_chain.keys_dir = str(tmp_path / "sbom" / "keys")
        settings.supply_chain.reports_dir = str(tmp_path / "reports")

    return api_factory(tweak=place)


def chain(api: Api) -> dict[str, Any]:
    response = api.client.get("/supply-chain", headers=api.headers("viewer"))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_supply_chain_status_from_the_sbom_its_signature_and_the_scan_report(chain_api: Api) -> None:
    from orch.supply_chain.paths import SbomPaths
    from orch.supply_chain.sbom import write_sbom
    from orch.supply_chain.scan import run_scan
    from orch.supply_chain.signing import PUBLIC_KEY, generate_keys, load_private_key, sign_detached

    api = chain_api
    assert chain(api) == {"sbom": None, "scan": None}

    paths = SbomPaths.from_settings(api.settings.supply_chain)
    write_sbom(ROOT / "pyproject.toml", paths.sbom)
    unsigned = chain(api)["sbom"]
    assert unsigned["path"] == str(paths.sbom) and unsigned["generated_at"]
    assert (unsigned["signed"], unsigned["verified"]) == (False, None) and "no signature" in unsigned["detail"]

    generate_keys(paths.keys_dir)
    sign_detached(paths.sbom, paths.signature, load_private_key(paths.keys_dir))
    signed = chain(api)["sbom"]
    assert (signed["signed"], signed["verified"]) == (True, True) and "sha256:" in signed["detail"]

    public = (paths.keys_dir / PUBLIC_KEY).read_bytes()
    (paths.keys_dir / PUBLIC_KEY).unlink()
    keyless = chain(api)["sbom"]
    assert (keyless["signed"], keyless["verified"]) == (True, None) and "no public key" in keyless["detail"]
    (paths.keys_dir / PUBLIC_KEY).write_bytes(public)

    run_scan(api.settings, only=["sbom"])
    scan = chain(api)["scan"]
    assert scan["passed"] is True and scan["finished_at"] and Path(scan["path"]).name != "security-report-latest.json"
    assert scan["summary"]["by_status"] == {"passed": 1} and scan["summary"]["scanners"]["sbom"]["status"] == "passed"

    paths.sbom.write_bytes(paths.sbom.read_bytes().replace(b'"name"', b'"nAme"', 1))
    tampered = chain(api)["sbom"]
    assert (tampered["signed"], tampered["verified"]) == (True, False) and "SBOM changed" in tampered["detail"]


def test_a_failed_scan_report_counts_its_findings(chain_api: Api) -> None:
    from datetime import datetime, timedelta, timezone

    from orch.supply_chain.report import SecurityReport, write_report
    from orch.supply_chain.results import ScannerResult
    from orch.supply_chain.scan import reports_dir

    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    older = SecurityReport([ScannerResult("eol", "passed", "fine")], started - timedelta(days=1), started)
    write_report(older, reports_dir(api_settings := chain_api.settings))
    newer = SecurityReport([ScannerResult("bandit", "failed", "2 issues", {"high": 1, "medium": 1}),
                            ScannerResult("secrets", "failed", "1 new", {"high": 1}),
                            ScannerResult("semgrep", "not_checked", "semgrep not installed")],
                           started, started + timedelta(seconds=3))
    write_report(newer, reports_dir(api_settings))
    scan = chain(chain_api)["scan"]
    assert scan["passed"] is False and scan["finished_at"] == (started + timedelta(seconds=3)).isoformat()
    assert scan["summary"]["by_status"] == {"failed": 2, "not_checked": 1}
    assert scan["summary"]["by_severity"] == {"high": 2, "medium": 1}
    assert scan["summary"]["scanners"]["bandit"]["counts"] == {"high": 1, "medium": 1}
