"""docs/configuration-reference.md is what the schema generates, and the schema documents every key."""

from __future__ import annotations

from pathlib import Path

from orch.config.reference import COMMAND, PAGE, render, undocumented

ROOT = Path(__file__).resolve().parents[1]


def test_committed_reference_is_what_the_schema_generates() -> None:
    committed = (ROOT / PAGE).read_text(encoding="utf-8")
    assert committed == render(), f"{PAGE} differs from the schema; regenerate it: {COMMAND}"


def test_every_key_has_a_description_and_every_section_a_docstring() -> None:
    assert undocumented() == [], "describe these in orch/config/ (Field(description=...), class docstrings)"


def test_every_key_and_variable_is_in_the_reference() -> None:
    """Spot checks of what the page is for: nested keys, list entries, mapping ids and the guide's names."""
    page = render()
    for line in ("## `security.rate_limit`", "## `monitoring.targets[].health_check`", "## `dispatch.cores.<id>`",
                 "| `url` | string | unset | `ORCH_DATABASE__URL`, `DATABASE_URL` |",
                 "`ORCH_LOGGING__LEVEL`, `ORCH_LOG_LEVEL`, `LOG_LEVEL`",
                 "`ORCH_PREFECT__AUTH_STRING`, `PREFECT_API_AUTH_STRING`, `PREFECT_SERVER_API_AUTH_STRING`",
                 "| `host_name` | string, matching `^[A-Za-z0-9_.-]{1,64}$` | This machine's hostname"):
        assert line in page, line
