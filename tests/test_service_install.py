"""The operations kit in infra/: the install script in a temporary root, the systemd units (checked by
``systemd-analyze verify`` and against what ``orch up`` starts), logrotate, nginx and the NSSM script."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
INSTALL = INFRA / "systemd" / "install.sh"
UNITS = sorted((INFRA / "systemd").glob("orch-next*"))
GUIDE_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"  # config/ssl_config.py
IS_ROOT = os.geteuid() == 0


def _seed_etc(root: Path) -> None:
    """The account files of a minimal system, as an image or chroot has them."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\n")


def _as_nobody(command: list[str]) -> list[str]:
    import pwd

    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *command]


def _install(root: Path, *, unprivileged: bool = False, script: Path = INSTALL) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(script), "--root", str(root)]
    return subprocess.run(_as_nobody(command) if unprivileged else command, check=False, capture_output=True, text=True,
                          timeout=60)


def _open_to_all(path: Path) -> None:
    """Owner writes, everyone reads (files) and enters (directories), under ``path`` and ``path`` itself."""
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() or os.access(item, os.X_OK) else 0o644)


def _world_readable_checkout(base: Path) -> Path:
    """What install.sh reads (itself, ``infra/``, ``config/``), copied with the checkout's layout into ``base``.

    The script finds its sources next to itself; run from the clone, it would work only where every
    directory above the clone lets another user in, and a clone under a 0700 home does not.
    """
    checkout = base / "checkout"
    for name in ("infra", "config"):
        shutil.copytree(ROOT / name, checkout / name)
    _open_to_all(base)
    return checkout / INSTALL.relative_to(ROOT)


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` with its type, mode, owner and content (or link target)."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: object = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = None
        found[str(path.relative_to(root))] = (oct(info.st_mode), info.st_uid, info.st_gid, content)
    return found


def _states(output: str) -> set[str]:
    return {line.split()[0] for line in output.splitlines() if line and not line.startswith((" ", "Next", "note"))}


def test_install_in_a_temporary_root_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _seed_etc(root)
    first = _install(root)
    assert first.returncode == 0, first.stderr
    after_first = _snapshot(root)
    second = _install(root)
    assert second.returncode == 0, second.stderr
    assert _snapshot(root) == after_first
    assert _states(second.stdout) <= {"exists", "unchanged", "skipped"}, second.stdout
    assert "created" in _states(first.stdout)

    config = root / "etc/orch-next/config.yaml"
    assert config.read_text() == (ROOT / "config/production.yaml.example").read_text()
    for secret in (config, root / "etc/orch-next/orch-next.env"):
        assert secret.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/orch-next").stat().st_mode & 0o777 == 0o750
    assert (root / "opt/orch-next/data").stat().st_mode & 0o777 == 0o750
    assert os.readlink(root / "opt/orch-next/.env") == "/etc/orch-next/orch-next.env"
    assert sorted(p.name for p in (root / "etc/systemd/system").iterdir()) == sorted(u.name for u in UNITS)
    assert (root / "etc/logrotate.d/orch-next").read_text() == (INFRA / "logrotate/orch-next").read_text()
    if IS_ROOT:
        account = next(line for line in (root / "etc/passwd").read_text().splitlines()
                       if line.startswith("orch-next:")).split(":")
        assert account[5:] == ["/opt/orch-next", "/usr/sbin/nologin"]
        assert (config.stat().st_uid, config.stat().st_gid) == (int(account[2]), int(account[3]))
        assert (root / "etc/orch-next").stat().st_uid == 0
        assert (root / "etc/orch-next").stat().st_gid == int(account[3])
    else:
        assert "skipped   user orch-next (needs root" in first.stdout


def test_rerun_keeps_an_edited_config_and_repairs_its_mode(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _seed_etc(root)
    assert _install(root).returncode == 0
    config = root / "etc/orch-next/config.yaml"
    config.write_text("environment: production\n")
    config.chmod(0o644)
    unit = root / "etc/systemd/system/orch-next-api.service"
    unit.write_text("stale\n")

    again = _install(root)
    assert again.returncode == 0, again.stderr
    assert config.read_text() == "environment: production\n"  # an operator's config is never replaced
    assert config.stat().st_mode & 0o777 == 0o600
    assert "fixed     /etc/orch-next/config.yaml" in again.stdout
    assert unit.read_text() == (INFRA / "systemd/orch-next-api.service").read_text()  # units are ours
    assert "updated   /etc/systemd/system/orch-next-api.service" in again.stdout
    assert not list(root.rglob(".*.tmp.*"))


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root to drop to another user")
def test_install_without_root_privileges() -> None:
    """As ``nobody``: the script and its sources are a world-readable copy, the root is nobody's own.

    Neither pytest's tmp_path nor the clone (which may sit under a 0700 home) can be entered by another
    user, so both live in a fresh directory of the system's temporary directory that is opened up here.
    """
    import pwd
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="orch-install-"))
    try:
        script = _world_readable_checkout(base)
        root = base / "root"
        root.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        reach = subprocess.run(_as_nobody(["test", "-r", str(script), "-a", "-w", str(root)]), check=False,
                               timeout=60)
        assert reach.returncode == 0, f"nobody cannot reach {base}: a directory above it is closed to other users"
        _check_unprivileged_install(root, script)
    finally:
        shutil.rmtree(base)


def _check_unprivileged_install(root: Path, script: Path) -> None:
    first = _install(root, unprivileged=True, script=script)
    assert first.returncode == 0, first.stderr
    assert "skipped   user orch-next (needs root" in first.stdout
    assert (root / "etc/orch-next/orch-next.env").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/orch-next/config.yaml").read_text() == (ROOT / "config/production.yaml.example").read_text()
    snapshot = _snapshot(root)
    assert _install(root, unprivileged=True, script=script).returncode == 0 and _snapshot(root) == snapshot

    refused = subprocess.run(_as_nobody(["bash", str(script)]), check=False, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and refused.stderr.startswith("error: run as root")


def _unit(path: Path) -> dict[str, list[str]]:
    """A unit file's keys, each with every value it is given (Environment= repeats)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_units_start_what_orch_up_starts() -> None:
    from orch.config.loader import load_settings
    from orch.stack.up import PREFECT_TUNING, child_environment, components

    settings = load_settings(environ={"ORCH_HOME": "."}, generate_secrets=False)
    plan = components(settings, child_environment(settings, None), "orch-process")
    venv = "/opt/orch-next/.venv/bin/"

    def argv(name: str) -> list[str]:
        return [part.replace(str(Path(sys.executable).parent) + "/", venv).replace(sys.executable, venv + "python")
                for part in plan[name].argv]

    units = {path.name: _unit(path) for path in UNITS if path.suffix == ".service"}
    for name, unit in units.items():
        assert unit["User"] == ["orch-next"] and unit["WorkingDirectory"] == ["/opt/orch-next"], name
        assert unit["StandardOutput"] == ["journal"] and unit["StandardError"] == ["journal"], name
        assert "PREFECT_SERVER_ANALYTICS_ENABLED=false" in unit["Environment"] or name.endswith("db-init.service")
    for name in ("orch-next-api.service", "orch-next-worker.service", "orch-next-prefect-server.service"):
        assert units[name]["Restart"] == ["always"] and units[name]["RestartSec"] == ["5"], name
        assert units[name]["ExecReload"] == ["/bin/kill -TERM $MAINPID"], name
    for name in ("orch-next-api.service", "orch-next-worker.service", "orch-next-db-init.service",
                 "orch-next-deployments.service"):
        assert "ORCH_CONFIG_PATH=/etc/orch-next/config.yaml" in units[name]["Environment"], name
        assert units[name]["EnvironmentFile"] == ["/etc/orch-next/orch-next.env"], name

    assert units["orch-next-api.service"]["ExecStart"] == [" ".join(argv("api"))]
    assert units["orch-next-deployments.service"]["ExecStart"] == [" ".join(argv("deployments"))]
    worker = units["orch-next-worker.service"]["ExecStart"][0].split()
    assert worker[:-1] == argv("worker")[:-1] and worker[-1] == "orch-worker-%H"
    child = child_environment(settings, None)
    for name in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_LOGGING_EXTRA_LOGGERS", "PYTHONUNBUFFERED",
                 "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        assert f"{name}={child[name]}" in units["orch-next-worker.service"]["Environment"], name
    server = units["orch-next-prefect-server.service"]
    defaults = dict(value.split("=", 1) for value in server["Environment"])
    started = server["ExecStart"][0]
    for name in ("PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT"):  # overridable in prefect-server.env
        started = started.replace("${" + name + "}", defaults[name])
    assert started == " ".join(argv("prefect-server"))
    assert {f"{k}={v}" for k, v in PREFECT_TUNING.items()} <= set(server["Environment"])
    flush = float(PREFECT_TUNING["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"])
    assert flush >= 1 and flush.is_integer()  # Prefect int()s it: below 1 the recorder's loop never sleeps
    assert server["EnvironmentFile"] == ["/etc/orch-next/prefect-server.env"]  # its auth string: never open
    assert units["orch-next-db-init.service"]["ExecStart"] == [venv + "orch db init"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as installed, with /opt/orch-next moved under tmp_path (verify checks executables)."""
    app = tmp_path / "opt/orch-next"
    (app / ".venv/bin").mkdir(parents=True)
    for name in ("python", "prefect", "orch"):
        stub = app / ".venv/bin" / name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        (units / unit.name).write_text(unit.read_text().replace("/opt/orch-next", str(app)))
    verify = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, units.iterdir()))],
                            check=False, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    broken = units / "orch-next-db-init.service"  # proof that verify judges: oneshot + Restart=always is refused
    broken.write_text(broken.read_text().replace("Restart=on-failure", "Restart=always"))
    refused = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, units.iterdir()))],
                             check=False, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Restart=" in refused.stderr


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate is not installed")
def test_logrotate_config_rotates_and_analysis_reads_the_rotated_copies(tmp_path: Path) -> None:
    import grp
    import pwd

    from orch.analysis.logs import analyze_logs

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    home = tmp_path / "opt/orch-next"
    (home / "logs").mkdir(parents=True)
    (home / "data/logs").mkdir(parents=True)
    conf = tmp_path / "orch-next.logrotate"
    conf.write_text((INFRA / "logrotate/orch-next").read_text().replace("/opt/orch-next", str(home))
                    .replace("orch-next orch-next", f"{user} {group}"))
    failure = ('{"timestamp": "2026-11-26T10:00:00+00:00", "action": "authenticate", "success": false, '
               '"username": "alice", "ip_address": "10.0.0.1"}\n')
    (home / "logs/audit.log").write_text(failure)
    (home / "data/logs/worker.log").write_text('{"event_type": "task.failed", "core_id": "C1", '
                                               '"data": {"error": "boom"}}\n')
    rotate = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert rotate.returncode == 0, rotate.stderr
    assert (home / "logs/audit.log.1").read_text() == failure
    assert (home / "logs/audit.log").read_text() == ""  # created anew
    assert (home / "data/logs/worker.log").read_text() == ""  # copied, then truncated in place
    (home / "logs/audit.log").write_text(failure.replace("alice", "bob"))

    report = analyze_logs([home / "data/logs/worker.log"], [home / "logs/audit.log"])
    assert report["auth_failures"]["total"] == 2  # the rotated copy and the new file
    report = analyze_logs([home / "data/logs/worker.log"], [])
    assert report["task_failures"]["patterns"] == [{"pattern": "boom", "count": 1}]


def _nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _nginx_setup(tmp_path: Path, conf: str) -> Path:
    """A self-signed certificate and a main config that includes ``conf`` with every path under tmp_path."""
    certs = tmp_path / "tls"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / "server.key"),
                    "-out", str(certs / "server.crt"), "-days", "1", "-subj", "/CN=orch.example.com"],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "orch-next.conf").write_text(conf.replace("/etc/orch-next/tls", str(certs)))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n"
        + "".join(f"  {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                         "uwsgi", "scgi"))
        + f"  access_log off;\n  include {tmp_path}/orch-next.conf;\n}}\n")
    return main


def test_nginx_example_enforces_tls12_and_the_guides_ciphers(tmp_path: Path) -> None:
    text = (INFRA / "nginx/orch-next.conf").read_text()
    assert re.search(r"^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$", text, re.MULTILINE)
    assert re.search(rf"^\s*ssl_ciphers {re.escape(GUIDE_CIPHERS)};$", text, re.MULTILINE)
    assert "server 127.0.0.1:8000;" in text and "return 301 https://" in text
    nginx = _nginx()
    if nginx is None:
        pytest.skip("nginx is not installed: checked the text only")
    main = _nginx_setup(tmp_path, text)
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr


@pytest.mark.skipif(_nginx() is None, reason="nginx is not installed")
def test_nginx_example_refuses_old_tls_and_proxies_with_client_headers(tmp_path: Path) -> None:
    """The example running: TLS 1.1 and non-listed ciphers refused; requests reach the API with the
    headers its rate limit and audit log rely on; plain HTTP is redirected."""
    import http.server
    import socket
    import ssl
    import threading

    import httpx
    from support import free_port

    seen: list[dict[str, str]] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            """Quiet."""

    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    conf = ((INFRA / "nginx/orch-next.conf").read_text()
            .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{api.server_port};")
            .replace("listen 80;", f"listen 127.0.0.1:{http_port};").replace("listen [::]:80;", "")
            .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
            .replace("listen [::]:443 ssl http2;", ""))
    main = _nginx_setup(tmp_path, conf)
    nginx = subprocess.Popen([str(_nginx()), "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"],
                             stderr=subprocess.DEVNULL)  # its error_log is tmp_path/error.log
    try:
        base = f"https://127.0.0.1:{https_port}"
        with httpx.Client(verify=False, timeout=5) as client:
            answer = None
            for _ in range(100):  # nginx starts in well under a second; 10 s for a loaded machine
                try:
                    answer = client.get(f"{base}/tasks", headers={"Host": "orch.example.com"})
                    break
                except httpx.ConnectError:
                    threading.Event().wait(0.1)
            assert answer is not None, (tmp_path / "error.log").read_text()
            assert answer.status_code == 200 and answer.headers["strict-transport-security"]
            redirect = client.get(f"http://127.0.0.1:{http_port}/health", headers={"Host": "orch.example.com"})
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "https://orch.example.com/health"
        assert seen[-1]["X-Forwarded-Proto"] == "https" and seen[-1]["X-Forwarded-For"] == "127.0.0.1"
        assert seen[-1]["Host"] == "orch.example.com"

        def handshake(version: ssl.TLSVersion, ciphers: str) -> str:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.minimum_version = context.maximum_version = version
            context.set_ciphers(ciphers)
            with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
                try:
                    with context.wrap_socket(raw) as tls:
                        return str(tls.version())
                except ssl.SSLError as exc:
                    return str(exc)

        assert handshake(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256") == "TLSv1.2"
        assert "ALERT_PROTOCOL_VERSION" in handshake(ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0").upper()
        assert "HANDSHAKE_FAILURE" in handshake(ssl.TLSVersion.TLSv1_2, "AES256-SHA").upper()  # RSA kx: not listed
    finally:
        nginx.terminate()
        nginx.wait(15)
        api.shutdown()


def test_nssm_script_installs_the_guides_service_and_changes_nothing_without_apply() -> None:
    """Static: PowerShell is not installable on this machine (no pwsh package offline)."""
    script = (INFRA / "windows/nssm_install.ps1").read_text()
    assert re.search(r"\[switch\]\$Apply", script)
    assert '[string]$ListenHost = "127.0.0.1"' in script and "[int]$Port = 5001" in script
    assert '@("AppEnvironmentExtra", "ORCH_HOST=$ListenHost", "ORCH_PORT=$Port", "ORCH_MCP_TOKEN=$McpToken")' in script
    assert '@("Start", "SERVICE_AUTO_START")' in script
    assert '$LogDir = Join-Path $AppDirectory "data\\logs\\current"' in script
    for stream in ("service_stdout", "service_stderr"):
        assert f'(Join-Path $LogDir "{stream}.log")' in script
    assert "$RotateKeepFiles = 5" in script and "$RotateBytes = 10485760" in script
    assert "$RotateSeconds = 86400" in script
    for key in ("AppRotateFiles", "AppRotateOnline"):
        assert f'@("{key}", "1")' in script
    assert "'ORCH_MCP_TOKEN=********'" in script  # the token is masked wherever a command is printed

    # Everything that changes the system sits inside an `if ($Apply) { ... }` block.
    depth_of_apply: list[int] = []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if re.search(r"^if \(\$Apply\) \{", stripped):
            depth_of_apply.append(depth)
        if re.search(r"& nssm @Arguments|New-Item |Register-ScheduledTask ", stripped):
            assert depth_of_apply, f"changes the system without -Apply: {stripped}"
        depth += stripped.count("{") - stripped.count("}")
        while depth_of_apply and depth <= depth_of_apply[-1]:
            depth_of_apply.pop()


def test_multi_host_environment_example_is_a_valid_configuration() -> None:
    """What infra/multi-host/orch-next.env.example sets is what a replica needs, and ORCH accepts it."""
    from dotenv import dotenv_values

    from orch.config.loader import load_settings

    example = {k: v for k, v in dotenv_values(INFRA / "multi-host/orch-next.env.example").items() if v}
    example.update(ORCH_CONFIG_PATH=str(ROOT / "config/production.yaml.example"), ORCH_HOME=str(ROOT),
                   JWT_SECRET="multi-host-jwt-secret-0123456789", WEBHOOK_SECRET="multi-host-webhook-0123456789",
                   PREFECT_API_AUTH_STRING="orch:multi-host-prefect-0123456789")
    settings = load_settings(environ=example, generate_secrets=False)
    assert settings.environment == "production"
    assert settings.database.url == "postgresql://orch:CHANGE_ME@db.internal:5432/orch_next"
    assert settings.security.rate_limit.storage_url == "redis://redis.internal:6379/0"
    assert settings.prefect.resolved_api_url() == "http://prefect.internal:4200/api"
    assert "orch.example.com" in settings.api.trusted_hosts and settings.api.host == "10.0.0.11"
    server = dotenv_values(INFRA / "multi-host/prefect-server.env.example")
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")


def test_infra_index_lists_every_file() -> None:
    """infra/README.md is the one place an operator looks: every file under infra/ is listed there."""
    import fnmatch

    index = (INFRA / "README.md").read_text()
    listed = re.findall(r"`([^`\s]+)`", index)
    files = [str(path.relative_to(INFRA)) for path in INFRA.rglob("*") if path.is_file() and path.name != "README.md"]
    assert files
    unlisted = [name for name in files if not any(fnmatch.fnmatch(name, pattern) for pattern in listed)]
    assert unlisted == []
