"""ORCH's processes load no optional library part they never use (orch/lean_imports.py): checked in real
processes started the way ``orch up`` starts them (:mod:`orch.stack.prestart`), since what matters is
what a fresh interpreter imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = '''import json, sys
print(json.dumps({name: name in sys.modules and sys.modules[name] is not None
                  for name in ("rfc3987_syntax", "lark", "jsonschema._format", "rich", "httpx._main", "prefect")}))
'''


def loaded(tmp_path: Path, preload: list[str]) -> dict[str, bool]:
    """What a component started under prestart with ``preload`` has imported once it runs."""
    (tmp_path / "lean_probe.py").write_text(PROBE, encoding="utf-8")
    argv = [sys.executable, "-m", "orch.stack.prestart"]
    for name in preload:
        argv += ["--import", name]
    done = subprocess.run([*argv, "--", "lean_probe"], input="go\n", capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path),
                               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(tmp_path / "p")},
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_prefect_process_skips_the_rfc3987_grammar_and_httpx_cli(tmp_path: Path) -> None:
    """The worker's preload (Prefect's process worker) imports jsonschema's formats, not the grammar."""
    seen = loaded(tmp_path, ["prefect.workers.process"])
    assert seen["prefect"] and seen["jsonschema._format"]
    assert not seen["rfc3987_syntax"] and not seen["lark"] and not seen["httpx._main"]


def test_the_api_process_skips_httpx_cli_and_never_loads_jsonschema(tmp_path: Path) -> None:
    seen = loaded(tmp_path, ["orch.api.app"])
    assert not seen["httpx._main"] and not seen["rich"]
    assert not seen["jsonschema._format"] and not seen["prefect"]  # nothing of Prefect's in the API


def test_without_the_marks_the_libraries_load_them(tmp_path: Path) -> None:
    """The baseline the two tests above are measured against: a plain interpreter loads both parts."""
    done = subprocess.run([sys.executable, "-c", "import prefect.workers.process\n" + PROBE], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "p"),
                                                      "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["rfc3987_syntax"] and seen["httpx._main"]


def test_the_exact_iri_check_still_works_in_a_lean_process(tmp_path: Path) -> None:
    """ORCH's SBOM validation falls back to the grammar for what its regular expression does not accept:
    the mark is gone once jsonschema's formats have loaded, so the grammar still imports then."""
    code = ("from orch.lean_imports import lean_process\nlean_process(prefect=True)\nimport prefect\n"
            "from orch.supply_chain.schema_check import is_iri_reference\n"
            "print(is_iri_reference('http://b\\u00fccher.example/\\u00fc'), is_iri_reference('http://h/<x>'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                               "PREFECT_HOME": str(tmp_path / "p")})
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


def test_prefect_cli_runs_prefect_commands(tmp_path: Path) -> None:
    """``python -m orch.stack.prefect_cli`` is Prefect's command line: its answers and its exit codes."""
    env = {"PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "p"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    version = subprocess.run([sys.executable, "-m", "orch.stack.prefect_cli", "version"], capture_output=True,
                             text=True, timeout=120, env=env)
    assert version.returncode == 0 and "Version:" in version.stdout, version.stderr[-2000:]
    wrong = subprocess.run([sys.executable, "-m", "orch.stack.prefect_cli", "no-such-command"], capture_output=True,
                           text=True, timeout=120, env=env)
    assert wrong.returncode != 0


def test_tokens_load_pyjwt_without_cryptography_and_still_work() -> None:
    """The API's tokens are HS256: PyJWT is loaded without cryptography, and signs and verifies as before;
    cryptography itself still imports afterwards (the SBOM signing needs it)."""
    code = ("import sys\nfrom orch.security.tokens import ALGORITHM, jwt\n"
            "print('cryptography' in sys.modules, jwt.algorithms.has_crypto)\n"
            "token = jwt.encode({'sub': 'a'}, 'k' * 32, algorithm=ALGORITHM)\n"
            "print(jwt.decode(token, 'k' * 32, algorithms=[ALGORITHM])['sub'])\n"
            "import cryptography.hazmat.primitives.asymmetric.rsa\nprint('cryptography' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.split() == ["False", "False", "a", "True"], done.stderr[-2000:]
