"""Requests that find a cache entry missing at the same moment share one read (``orch.api.single_flight``).

Found on the user's path (py-spy on the API while 32 clients sent single ``POST /dispatch``): each time the
token's identity or the maintenance switch lapsed from its one-second cache, every request in flight read
the database itself, past the pool's size, each past it on a connection opened for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import PASSWORD, add_users, make_settings, serve_app
from sqlalchemy import event

from orch.api.single_flight import SingleFlight
from orch.maintenance_mode import Switch
from orch.storage.engine import get_engine

CLIENTS = 32


def test_concurrent_callers_of_one_key_share_one_call_and_its_error() -> None:
    calls: list[str] = []
    release = threading.Event()

    def read(key: str) -> str:
        calls.append(key)
        release.wait(30)
        if key == "bad":
            raise LookupError(key)
        return key.upper()

    async def main() -> None:
        flights = SingleFlight()
        good = [asyncio.ensure_future(flights.run("good", read, "good")) for _ in range(CLIENTS)]
        bad = [asyncio.ensure_future(flights.run("bad", read, "bad")) for _ in range(CLIENTS)]
        gone = asyncio.ensure_future(flights.run("good", read, "good"))
        await asyncio.sleep(0)  # every caller has started: each found the key's call, or started it
        gone.cancel()  # a client that went away does not end the call the others wait for
        release.set()
        assert await asyncio.gather(*good) == ["GOOD"] * CLIENTS
        outcomes = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(outcome, LookupError) for outcome in outcomes)
        assert sorted(calls) == ["bad", "good"]
        assert await flights.run("good", read, "good") == "GOOD"  # a call that landed is not remembered
        assert sorted(calls) == ["bad", "good", "good"]

    asyncio.run(main())


@pytest.fixture
def reads(database_url: str, isolated_env: Path) -> Iterator[tuple[str, str, dict[str, int]]]:
    """A served app whose caches never lapse once filled (a long identity period, a switch on a clock that
    stands still), its URL, a token, and a count of the statements that read identities and the switch."""
    settings = make_settings(isolated_env, database_url, ORCH_SECURITY__IDENTITY_CACHE_SECONDS="60")
    add_users(settings)
    counted = {"identity": 0, "switch": 0}

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "users.token_version" in statement and "password" not in statement:
            counted["identity"] += 1
        elif "FROM runtime_switches" in statement:
            counted["switch"] += 1

    engine = get_engine(settings.database)
    with serve_app(settings) as (url, app):
        app.state.maintenance_switch = Switch(settings, clock=lambda: 0.0)
        answer = httpx.post(url + "/auth/token", data={"username": "oscar", "password": PASSWORD}, timeout=30)
        assert answer.status_code == 200, answer.text
        event.listen(engine, "before_cursor_execute", count)
        try:
            yield url, answer.json()["access_token"], counted
        finally:
            event.remove(engine, "before_cursor_execute", count)


def test_concurrent_requests_read_the_identity_and_the_switch_once(reads: tuple[str, str, dict[str, int]]) -> None:
    url, token, counted = reads

    async def send() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                     timeout=120) as client:
            return list(await asyncio.gather(*(client.post("/dispatch", json={"core_id": "WORK_AI_01",
                                                                              "action": "noop"})
                                               for _ in range(CLIENTS))))

    answers = asyncio.run(send())
    assert [answer.status_code for answer in answers] == [202] * CLIENTS, answers[0].text
    assert counted == {"identity": 1, "switch": 1}
