"""The Prefect database template a fresh ``orch up`` starts from (orch/stack/prefect_template.py): made by
Prefect's own migrations and block registration, copied only where ``orch up``'s own server keeps its database
and only when there is none, never as a partial file, and served by a real Prefect server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest
from support import BIN, free_port, wait_until

from orch.stack.prefect_template import TemplateUnusable, seed, seedable


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template made as ``make install`` makes it, in its own process (it imports Prefect's server)."""
    target = tmp_path_factory.mktemp("template") / "prefect-test.db"
    target.write_bytes(b"an older, broken template")  # replaced whole
    made = subprocess.run([str(BIN / "python"), "-c", "import sys; from pathlib import Path; "
                           "from orch.stack.prefect_template import build; build(Path(sys.argv[1]))", str(target)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    return target


def test_the_template_is_prefects_schema_and_block_types_only(template: Path) -> None:
    with sqlite3.connect(template) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        filled = {table for table in tables if connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]}
        (head,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    assert {"flow_run", "deployment", "work_pool", "block_document"} <= tables
    # Nothing of an installation (pools, queues, runs, block documents such as secrets): schema and types only.
    assert filled == {"alembic_version", "block_type", "block_schema", "block_schema_reference"}, filled
    assert [head] == _prefect_sqlite_heads()  # the installed Prefect's newest migration: nothing left to run
    assert not [p for p in template.parent.iterdir() if p != template]  # no scratch copy left beside it


def test_a_server_started_on_a_copy_serves_at_prefects_head_without_migrating(template: Path, tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    assert seed(home, template)
    assert sorted(p.name for p in home.iterdir()) == ["prefect.db"]  # the copy only: no partial file
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(key, None)
    with log.open("wb") as out:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port), "--no-ui", "--analytics-off"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def ready() -> bool:
                assert server.poll() is None, log.read_text()[-3000:]
                return httpx.get(f"http://127.0.0.1:{port}/api/ready", timeout=2).status_code == 200

            wait_until(ready, 120, "the Prefect server on the copy", ignore=(httpx.HTTPError,))
            created = httpx.post(f"http://127.0.0.1:{port}/api/work_pools/", timeout=10,
                                 json={"name": "on-the-copy", "type": "process"})
            assert created.status_code == 201, created.text
            types = httpx.post(f"http://127.0.0.1:{port}/api/block_types/filter", json={}, timeout=10).json()
            assert "secret" in {block["slug"] for block in types}
        finally:
            server.terminate()
            server.wait(30)
    # The server found the copy at its own head: had the template been behind, it would have migrated the copy.
    with sqlite3.connect(home / "prefect.db") as copy, sqlite3.connect(template) as original:
        assert (copy.execute("SELECT version_num FROM alembic_version").fetchall()
                == original.execute("SELECT version_num FROM alembic_version").fetchall())
    copy.close()
    original.close()


def test_an_existing_database_is_never_replaced(template: Path, tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"the operator's history")
    assert not seed(home, template)
    assert (home / "prefect.db").read_bytes() == b"the operator's history"
    assert sorted(p.name for p in home.iterdir()) == ["prefect.db"]


def test_no_template_leaves_the_database_to_prefect(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    assert not seed(home, tmp_path / "prefect-0.0.0.db")
    assert not home.exists() or not list(home.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "not a database", "not Prefect's"])
def test_a_damaged_template_copies_nothing_and_says_so(damage: str, template: Path, tmp_path: Path) -> None:
    broken = tmp_path / "prefect-9.9.9.db"
    if damage == "truncated":
        broken.write_bytes(template.read_bytes()[: template.stat().st_size // 3])
    elif damage == "not a database":
        broken.write_bytes(b"#!/bin/sh\necho not a database\n" * 100)
    else:
        with sqlite3.connect(broken) as connection:
            connection.execute("CREATE TABLE t (x)")
        connection.close()
    home = tmp_path / "prefect"
    with pytest.raises(TemplateUnusable) as raised:
        seed(home, broken)
    assert str(broken) in str(raised.value) and "python -m orch.stack.prefect_template --force" in str(raised.value)
    assert list(home.iterdir()) == []  # Prefect will create its own; no partial copy left


@pytest.mark.parametrize("elsewhere", [
    {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"},
    {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"},
    {"PREFECT_SERVER_DATABASE_NAME": "prefect"},
    {"PREFECT_PROFILES_PATH": "/etc/prefect/profiles.toml"},
    {"PREFECT_HOME": "/srv/prefect-of-the-operator"},
])
def test_a_database_chosen_elsewhere_is_left_alone(elsewhere: dict[str, str], tmp_path: Path) -> None:
    managed = tmp_path / "data" / "prefect"
    env = {"PREFECT_HOME": str(managed), "PATH": "/usr/bin"}
    assert seedable(env, managed, tmp_path)
    assert not seedable({**env, **elsewhere}, managed, tmp_path)


def test_a_prefect_settings_file_naming_a_database_is_left_alone(tmp_path: Path) -> None:
    managed = tmp_path / "data" / "prefect"
    env = {"PREFECT_HOME": str(managed)}
    (tmp_path / "prefect.toml").write_text("[server.api]\nport = 4200\n")
    assert seedable(env, managed, tmp_path)
    (tmp_path / "prefect.toml").write_text('[server.database]\nconnection_url = "postgresql+asyncpg://db/p"\n')
    assert not seedable(env, managed, tmp_path)


def _prefect_sqlite_heads() -> list[str]:
    """The head revision(s) of the installed Prefect's SQLite migrations, read from its migration scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from prefect.server import database

    migrations = Path(database.__file__).parent / "_migrations"
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("version_locations", str(migrations / "versions" / "sqlite"))
    return list(ScriptDirectory.from_config(config).get_heads())
