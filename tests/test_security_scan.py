"""The security scan: real detect-secrets, bandit and pip-audit runs on small projects, the EOL table, the
resource guard, the report, and the ``security-scan`` flow on the real Prefect server and a real worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support import BIN, free_port

from orch.config.runtime import get_settings, reset_settings_cache
from orch.supply_chain.code_scanners import run_bandit, run_dependency_audit
from orch.supply_chain.resource_guard import check_resources
from orch.supply_chain.secrets_scan import repository_files, scan, secret_hash

ROOT = Path(__file__).resolve().parents[1]
# Fake secrets assembled at run time, so this file itself holds none for the repository's own scan.
FAKE_AWS_KEY = "AKIA" + "Z7Q2" * 4
FAKE_JWT_SECRET = "jwt-" + "q8Vz3Kp1" * 4  # pragma: allowlist secret
FAKE_PREFECT_KEY = "pnu_" + "r4Nd0mK3y" * 4  # pragma: allowlist secret


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny repository: a clean Python package and a config file without secrets."""
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text('"""A clean package."""\n\n\ndef add(a: int, b: int) -> int:\n'
                                              '    return a + b\n')
    (root / "settings.yaml").write_text("security:\n  jwt_secret: \"${JWT_SECRET}\"\n")
    return root


def scan_secrets_script(root: Path, *args: str, data: bool = False) -> subprocess.CompletedProcess[str]:
    """The guide's scan_secrets.py on ``root`` as ORCH_HOME; its data and log directories only with ``data``."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "ops" / "scan_secrets.py"), "--root", str(root),
                           *([] if data else ["--no-data"]), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ORCH_HOME": str(root)})


def test_planted_secrets_are_found_and_never_printed(project: Path) -> None:
    assert scan_secrets_script(project).returncode == 0
    (project / "deploy.env").write_text(f"JWT_SECRET={FAKE_JWT_SECRET}\nAWS_ACCESS_KEY_ID={FAKE_AWS_KEY}\n")
    done = scan_secrets_script(project)
    assert done.returncode == 1
    assert "deploy.env:1: ORCH JWT secret" in done.stdout and "deploy.env:2: AWS Access Key" in done.stdout
    assert FAKE_JWT_SECRET not in done.stdout + done.stderr and FAKE_AWS_KEY not in done.stdout + done.stderr


def test_baseline_accepts_reviewed_findings_and_a_new_one_still_fails(project: Path) -> None:
    (project / "fixture.py").write_text(f'TOKEN_FOR_TESTS = "{FAKE_AWS_KEY}"\n')
    assert scan_secrets_script(project, "--update-baseline").returncode == 0
    baseline = json.loads((project / ".secrets.baseline").read_text())
    assert baseline["results"]["fixture.py"][0]["hashed_secret"] == secret_hash(FAKE_AWS_KEY)
    assert FAKE_AWS_KEY not in (project / ".secrets.baseline").read_text()
    assert scan_secrets_script(project).returncode == 0

    (project / "fixture.py").write_text(f'# moved down a line\nTOKEN_FOR_TESTS = "{FAKE_AWS_KEY}"\n')
    assert scan_secrets_script(project).returncode == 0  # accepted by hash, not by line number
    (project / "new.py").write_text(f'SMTP_PASSWORD = "{FAKE_JWT_SECRET}"\n')
    done = scan_secrets_script(project)
    assert done.returncode == 1 and "new.py:1" in done.stdout and "fixture.py" not in done.stdout


def test_allowlist_pragma_and_placeholders_are_not_findings(project: Path) -> None:
    (project / "a.py").write_text(f'KEY = "{FAKE_AWS_KEY}"  # pragma: allowlist secret\n'
                                  'url = "postgresql://orch:${DB_PASSWORD}@db/orch"\nWEBHOOK_SECRET=\n')
    result = scan(repository_files(project), project)
    assert result.new == []


def test_the_running_configurations_secrets_are_found_in_logs_and_secrets_json_is_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    value = "a-live-webhook-" + uuid.uuid4().hex
    (data / "logs" / "worker.log").write_text(f'{{"message": "sent with {value}"}}\n')
    (data / "secrets.json").write_text(json.dumps({"webhook_secret": value}))
    from orch.supply_chain.secrets_scan import directory_files

    result = scan(directory_files(data), tmp_path, known_secrets=[value])
    assert [(f.filename, f.type) for f in result.new] == [("data/logs/worker.log", "ORCH configured secret")]


def fresh_install_data(home: Path) -> Path:
    """``<home>/data`` as `orch up` and one backup leave it (needs the ``prefect_server`` fixture): the
    database, secrets.json, a real backup and its catalog, and the real Prefect server's memo store."""
    from orch.backup.create import create_backup
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    settings = load_settings(environ={"ORCH_HOME": str(home)})  # as `orch up` does: secrets.json too
    upgrade(settings.database, create_database=True)
    digest = create_backup(settings)["sha256"]
    data = home / "data"
    assert digest in (data / "backups" / "catalog.json").read_text()
    memo = Path(os.environ["PREFECT_HOME"]) / "memo_store.toml"  # written by the session server's start-up
    assert memo.is_file(), f"the Prefect server wrote no {memo}"
    (data / "prefect").mkdir()
    shutil.copy(memo, data / "prefect" / "memo_store.toml")  # where `orch up` puts the server's home
    return data


def test_a_fresh_installs_own_data_files_are_not_secrets_and_a_leak_beside_them_still_is(
        prefect_server: str, project: Path) -> None:
    """After `orch up` and one backup, data/ holds the backup catalog (sha256 digests) and the Prefect
    server's memo store (a sha256 of its block registry): not secrets. A secret in a log, or in a file a
    human writes beside the memo store (Prefect's profiles.toml), or the memo store's very content under
    another name, still is: the exclusion is of those two files, not of what they look like."""
    data = fresh_install_data(project)
    memo = data / "prefect" / "memo_store.toml"
    clean = scan_secrets_script(project, data=True)
    assert clean.returncode == 0 and clean.stdout.startswith("secret scan: "), clean.stdout + clean.stderr

    (data / "logs").mkdir()
    (data / "logs" / "worker.log").write_text(f'{{"message": "env AWS_ACCESS_KEY_ID={FAKE_AWS_KEY}"}}\n')
    (data / "prefect" / "profiles.toml").write_text(
        f'active = "local"\n\n[profiles.local]\nPREFECT_API_KEY = "{FAKE_PREFECT_KEY}"\n')
    shutil.copy(memo, data / "backups" / "notes.toml")
    leaked = scan_secrets_script(project, data=True)
    assert leaked.returncode == 1
    reported = {line.split(":")[0] for line in leaked.stdout.splitlines()}
    assert reported == {"data/logs/worker.log", "data/prefect/profiles.toml", "data/backups/notes.toml"}, \
        leaked.stdout
    assert FAKE_AWS_KEY not in leaked.stdout + leaked.stderr and FAKE_PREFECT_KEY not in leaked.stdout


def test_a_corrupt_baseline_is_a_clear_error_not_an_empty_one(project: Path) -> None:
    (project / ".secrets.baseline").write_text("{not json")
    done = scan_secrets_script(project)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "baseline" in done.stderr


def test_dependency_audit_says_not_checked_when_the_vulnerability_service_is_unreachable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    # A clean report left by an earlier run must not be read as this run's result.
    (tmp_path / "audit.json").write_text(json.dumps({"dependencies": [{"name": "x", "version": "1", "vulns": []}]}))
    result = run_dependency_audit(tmp_path / "audit.json", None, timeout=120,
                                  env={"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "NO_PROXY": ""})
    assert result.status == "not_checked", result.summary()
    assert result.summary().startswith("dependencies: not checked (")


def test_dependency_audit_against_an_offline_osv_database(tmp_path: Path) -> None:
    from importlib.metadata import version

    installed = version("PyYAML")
    db = tmp_path / "osv"
    db.mkdir()
    (db / "GHSA-test-0001.json").write_text(json.dumps({
        "id": "GHSA-test-0001", "summary": "test advisory", "database_specific": {"severity": "HIGH"},
        "affected": [{"package": {"ecosystem": "PyPI", "name": "pyyaml"},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999"}]}]}]}))
    (db / "GHSA-test-0002.json").write_text(json.dumps({
        "id": "GHSA-test-0002", "affected": [{"package": {"ecosystem": "PyPI", "name": "PyYAML"},
                                              "ranges": [{"type": "ECOSYSTEM",
                                                          "events": [{"introduced": "0"}, {"fixed": "1.0"}]}]}]}))
    result = run_dependency_audit(tmp_path / "audit.json", db, timeout=60)
    assert result.status == "failed" and result.counts == {"high": 1}
    assert [(f["id"], f["version"]) for f in result.findings] == [("GHSA-test-0001", installed)]
    (db / "GHSA-test-0001.json").unlink()
    assert run_dependency_audit(tmp_path / "audit.json", db, timeout=60).status == "passed"
    assert run_dependency_audit(tmp_path / "audit.json", tmp_path / "nowhere", timeout=60).status == "not_checked"


def test_bandit_fails_on_medium_and_never_quotes_a_password(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "bandit.json"
    assert run_bandit(project, ["pkg"], out, "medium").status == "passed"
    (project / "pkg" / "bad.py").write_text(
        "import subprocess\n\n\ndef run(cmd: str) -> None:\n    subprocess.call(cmd, shell=True)\n\n\n"
        f'password = "{FAKE_JWT_SECRET}"\n')
    result = run_bandit(project, ["pkg"], out, "medium")
    assert result.status == "failed" and result.counts.get("high") == 1
    assert {f["test"] for f in result.findings} >= {"B602", "B105"}
    assert FAKE_JWT_SECRET not in out.read_text() and FAKE_JWT_SECRET not in json.dumps(result.to_dict())


def test_resource_guard_warns_and_fails_only_when_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orch.config.schema import ResourceGuardSettings

    relaxed = ResourceGuardSettings(cpu_percent=100, min_free_disk=1)
    assert check_resources(relaxed, tmp_path, sample_seconds=0.1).status == "passed"
    tight = ResourceGuardSettings(min_free_disk="1000TB")
    warned = check_resources(tight, tmp_path, sample_seconds=0.1)
    assert warned.status == "warning" and "below" in warned.detail
    monkeypatch.setenv("RESOURCE_GUARD_STRICT", "true")
    assert check_resources(tight, tmp_path, sample_seconds=0.1).status == "failed"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "ops" / "resource_guard.py"), "--min-free-gb",
                           "1000000", "--path", str(tmp_path), "--sample-seconds", "0.1"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "ORCH_HOME": str(tmp_path)})
    assert done.returncode == 1 and "resource guard: failed" in done.stderr


def environment_eol_table(directory: Path) -> tuple[Path, str]:
    """An EOL table for this environment and the summary line the EOL check must give for it: the running
    Python's line (checked), Prefect only up to line 0 (so the installed one is newer than the table, as a
    fresh install's newest cryptography was), and a product that is not installed. Never stale, never past
    an end: what it asserts does not move with the date or with what a registry serves."""
    from importlib.metadata import version

    table = directory / "eol.yaml"
    table.write_text(f"reviewed: 2026-01-01\nfresh_for_days: 100000\nproducts:\n  python:\n"
                     f"    '{sys.version_info.major}.{sys.version_info.minor}': null\n  prefect:\n    '0': null\n"
                     "  orch-test-not-installed:\n    '1': null\n")
    return table, (f"eol: passed (1 checked; 1 newer than the table (prefect {version('prefect')}); 1 not checked "
                   "(orch-test-not-installed))")


def scan_env(monkeypatch: pytest.MonkeyPatch, project: Path, **extra: str) -> str:
    """Point the configuration at the small project, with :func:`environment_eol_table` (returns its summary
    line); the dependency audit's service is unreachable (a closed proxy), loopback (the Prefect server, the
    receivers) is not."""
    closed = f"http://127.0.0.1:{free_port()}"
    eol_table, eol_summary = environment_eol_table(project.parent)
    values = {"ORCH_HOME": str(project), "ORCH_SUPPLY_CHAIN__CODE_PATHS": "[pkg]",
              "ORCH_SUPPLY_CHAIN__EOL_TABLE": str(eol_table),
              "ORCH_SUPPLY_CHAIN__RESOURCE_GUARD__CPU_PERCENT": "100",
              "ORCH_SUPPLY_CHAIN__RESOURCE_GUARD__MIN_FREE_DISK": "1",
              "HTTPS_PROXY": closed, "HTTP_PROXY": closed, "NO_PROXY": "127.0.0.1,localhost", **extra}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    return eol_summary


def test_orch_scan_writes_one_report_with_a_line_per_scanner(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support import run_orch

    scan_env(monkeypatch, project)
    done = run_orch("scan", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:7]] == ["secrets", "eol", "bandit", "dependencies", "semgrep",
                                                          "resources", "sbom"]
    assert lines[0].startswith("secrets: passed (") and lines[2].startswith("bandit: passed (")
    assert lines[3].startswith("dependencies: not checked (")
    assert lines[4] == ("semgrep: skipped (not installed; pip install 'orch-next[semgrep]')" if not
                        (BIN / "semgrep").exists() else lines[4])
    assert lines[6].startswith("sbom: not checked (no SBOM at")
    report = json.loads((project / "security_reports" / "security-report-latest.json").read_text())
    assert report["verdict"] == "passed" and len(report["summary"]) == 7
    assert "| dependencies | not checked |" in (project / "security_reports" / "security-report-latest.md").read_text()

    (project / "leak.env").write_text(f"ORCH_MCP_TOKEN={FAKE_JWT_SECRET}\n")
    failed = run_orch("scan", "--only", "secrets", timeout=120)
    assert failed.returncode == 1 and failed.stdout.startswith("secrets: failed (1 high; ")
    reports = "".join(p.read_text() for p in (project / "security_reports").iterdir())
    assert FAKE_JWT_SECRET not in reports and "leak.env" in reports
    assert run_orch("scan", "--only", "nonsense").stderr.startswith("error: unknown scanner nonsense")


def test_security_scan_flow_publishes_the_report_notifies_and_fails_on_a_leak(
        prefect_server: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from receivers import http_receiver

    from flows.security_scan import security_scan

    (project / "leak.env").write_text(f"WEBHOOK_SECRET={FAKE_JWT_SECRET}\n")
    with http_receiver() as receiver:
        scan_env(monkeypatch, project, ORCH_NOTIFICATIONS__WEBHOOK__URL=receiver.url)
        state = security_scan(scanners=["secrets", "eol"], return_state=True)
    assert state.is_failed() and "secrets: failed (1 high" in state.message
    assert len(receiver.requests) == 1
    body = receiver.requests[0]["body"]
    assert "secrets: failed" in str(body) and FAKE_JWT_SECRET not in str(body)

    async def artifacts() -> list:
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))

    import asyncio

    [artifact] = [a for a in asyncio.run(artifacts()) if a.key]  # (the other one is the run's result record)
    assert artifact.key == "security-report" and "| secrets | failed |" in artifact.data
    assert FAKE_JWT_SECRET not in artifact.data


@pytest.mark.slow
def test_security_scan_deployment_runs_to_completed_with_its_artifact(
        prefect_server: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a scheduled run executes it: a deployment on a process work pool, picked up by a real worker, on a
    healthy fresh install (its data directory after `orch up` and a backup; a package newer than the EOL
    table): it passes."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    from flows.security_scan import security_scan

    eol_summary = scan_env(monkeypatch, project)
    fresh_install_data(project)
    pool = f"orch-test-{uuid.uuid4().hex[:8]}"

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    asyncio.run(create_pool())
    monkeypatch.chdir(ROOT)  # entrypoint relative to the checkout, which is the run's working directory
    deployment = security_scan.to_deployment(name="test", parameters={"scanners": ["secrets", "eol", "resources"]},
                                             job_variables={"working_dir": str(ROOT)})
    deployment.apply(work_pool_name=pool)
    flow_run = run_deployment("security-scan/test", timeout=0)
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
                             "--run-once"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]

    async def final() -> tuple:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run.id)
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
            return run, found

    run, found = asyncio.run(final())
    assert run.state.is_completed(), (run.state, worker.stdout[-6000:], worker.stderr[-6000:])
    [artifact] = [a for a in found if a.key]
    assert artifact.key == "security-report" and artifact.type == "markdown"
    assert "# Security report - PASSED" in artifact.data and "| secrets | passed |" in artifact.data
    eol_detail = eol_summary.removeprefix("eol: passed (").removesuffix(")")
    assert f"| eol | passed | {eol_detail} |" in artifact.data  # a package newer than the table fails nothing
    assert (project / "security_reports" / "security-report-latest.json").is_file()
    assert get_settings().supply_chain.code_paths == ["pkg"]


def test_a_log_too_large_for_detect_secrets_is_still_searched_for_orch_secrets(tmp_path: Path) -> None:
    from orch.supply_chain.secrets_scan import MAX_FILE_BYTES, directory_files

    logs = tmp_path / "logs"
    logs.mkdir()
    value = "a-live-jwt-" + uuid.uuid4().hex
    with (logs / "orch-next.log").open("w") as log:
        filler = '{"message": "request served"}\n'
        log.write(filler * (MAX_FILE_BYTES // len(filler) + 1))
        log.write(f'{{"message": "token {value}"}}\n')
    result = scan(directory_files(logs), tmp_path, known_secrets=[value])
    assert [(f.filename, f.type) for f in result.new] == [("logs/orch-next.log", "ORCH configured secret")]
    assert result.new[0].line_number > MAX_FILE_BYTES // len(filler)


def test_the_guides_security_scan_script_works_as_written(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eol_summary = scan_env(monkeypatch, project)
    done = subprocess.run([str(ROOT / "scripts" / "security_scan.sh"), "--only", "eol", "--only", "semgrep"],
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["Running security scans...", eol_summary]
    assert (project / "security_reports" / "security-report-latest.md").is_file()
