"""What `orch up`'s long-lived supervisor imports, and the gate that lets a component import ahead.

The supervisor runs for as long as the stack does; everything it imports stays resident (Prefect,
SQLAlchemy or pydantic cost tens of MB each). The running `orch up` is checked too, in
tests/test_stack_e2e.py (no heavy extension module mapped in its process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("prefect", "sqlalchemy", "alembic", "pydantic", "pydantic_core", "pydantic_settings", "httpx", "typer",
         "fastapi", "starlette", "yaml", "orjson")


def modules_after(code: str) -> set[str]:
    """``sys.modules`` after ``code`` ran in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def imported_by(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    return {name.partition(".")[0] for name in modules_after(code)}


def test_orch_help_imports_no_command_module() -> None:
    """``orch --help`` lists every command from orch/cli/main.py; the modules that hold them load only when one
    of their commands runs (``orch tasks --help`` loads orch.cli.tasks and nothing else of the CLI)."""
    def cli_modules(*args: str) -> set[str]:
        run = f"import sys\nsys.argv = ['orch', *{args!r}]\nfrom orch.cli.main import main\ntry:\n    main()\n" \
              "except SystemExit:\n    pass"
        return {name for name in modules_after(run) if name.startswith("orch.cli.")}

    assert cli_modules("--help") == {"orch.cli.main", "orch.cli.lazy"}
    assert cli_modules("tasks", "--help") == {"orch.cli.main", "orch.cli.lazy", "orch.cli.tasks", "orch.cli.common"}


def test_the_supervisor_half_imports_nothing_heavy() -> None:
    """What ``python -m orch.stack.up --plan-fd N`` loads before it reads its plan (the same modules the
    exec'd supervisor has, plus runpy's)."""
    found = imported_by("import orch.stack.up, orch.stack.supervisor, orch.stack.prestart")
    assert not found & set(HEAVY), sorted(found & set(HEAVY))


def test_the_supervisor_entry_refuses_to_run_without_a_plan() -> None:
    result = subprocess.run([sys.executable, "-m", "orch.stack.up"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == "usage: python -m orch.stack.up --plan-fd N (started by `orch up`)"


def test_a_gated_component_imports_ahead_and_runs_once_released(tmp_path: Path) -> None:
    """Started through the supervisor: the module named with --import (``this``, which prints as it is
    imported) is loaded before the release, the component (``python -m platform``: prints one line) only
    after it."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from orch.stack.supervisor import Component, Supervisor
        from support import wait_until

        component = Component("probe", [sys.executable, "-m", "orch.stack.prestart", "--import", "this", "--",
                                        "platform"], {{"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}},
                              Path({str(tmp_path)!r}), gated=True)
        supervisor = Supervisor(Path({str(tmp_path)!r}) / "logs")
        running = supervisor.start(component)
        log = supervisor.log_dir / "probe.log"
        wait_until(lambda: "The Zen of Python" in log.read_text(), 60, "`this` to be imported ahead")
        assert running.process.poll() is None, "ran before it was released"
        supervisor.release("probe")
        assert running.process.wait(60) == 0
        print(repr(log.read_text().splitlines()[-1]))
    """)
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", script], cwd=tests, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(tests), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    import platform

    assert result.stdout.strip() == repr(platform.platform())


def test_a_gated_component_whose_supervisor_went_away_does_not_run() -> None:
    result = subprocess.run([sys.executable, "-m", "orch.stack.prestart", "--", "platform"], input="",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "orch.stack.prestart: the supervisor went away before starting platform"
