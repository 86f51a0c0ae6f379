"""Credentials against the real API: login throttling that cannot lock the owner out, tokens that die with
the credentials they were issued for, argon2id hashes with old scrypt ones rehashed on login, tokens in
URLs only where a stream needs them, and token responses nobody caches.

Addresses are the client addresses the app sees: the fixture's client is ``testclient`` (the users'
own address, where they logged in); other TestClients on the same app stand for other machines.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from api_fixtures import PASSWORD, Api, serve
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from orch.security import login
from orch.storage.engine import session_scope
from orch.storage.models import LoginThrottle, User
from orch.storage.types import utcnow

ATTACKER = "203.0.113.9"
# Waits long enough that no test depends on how fast the machine answers (a test ends a wait by
# writing the row, see end_wait, never by sleeping).
LONG_WAITS = {"ORCH_SECURITY__LOCKOUT__BASE_DELAY_SECONDS": "60", "ORCH_SECURITY__LOCKOUT__LOCKOUT_SECONDS": "900",
              "ORCH_SECURITY__LOCKOUT__USER_MAX_DELAY_SECONDS": "60"}


def client_at(api: Api, address: str) -> TestClient:
    """The same running app, reached from another client address."""
    return TestClient(api.client.app, base_url="http://127.0.0.1", client=(address, 40000))


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/auth/token", data={"username": username, "password": password})


def throttle(api: Api, username: str, address: str) -> LoginThrottle | None:
    with session_scope(api.settings.database) as session:
        row = session.get(LoginThrottle, (username, address))
        if row is not None:
            session.expunge(row)
        return row


def end_wait(api: Api, username: str, address: str) -> None:
    """What waiting out the delay would do, without the sleep: the row's wait ends now."""
    with session_scope(api.settings.database, write_lock=True) as session:
        session.execute(update(LoginThrottle).where(LoginThrottle.username == username,
                                                    LoginThrottle.address == address)
                        .values(blocked_until=utcnow() - timedelta(seconds=1)))


# ---- throttling ----------------------------------------------------------------------------------
def test_owner_logs_in_from_own_address_while_another_address_fails_50_times(api_factory: Any,
                                                                              database_url: str) -> None:
    api = api_factory(database_url, **LONG_WAITS)
    attacker = client_at(api, ATTACKER)
    statuses = [log_in(attacker, "alice", f"guess-{n}").status_code for n in range(50)]
    free = api.settings.security.lockout.max_failures
    assert statuses == [401] * free + [429] * (50 - free)
    assert log_in(attacker, "alice").status_code == 429  # the right password waits too, at that address
    owner = log_in(api.client, "alice")
    assert owner.status_code == 200, owner.text
    assert api.client.get("/users", headers={"Authorization": f"Bearer {owner.json()['access_token']}"}
                          ).status_code == 200
    counted = throttle(api, "alice", ATTACKER)
    assert counted is not None and counted.failures == free  # refused attempts were not counted
    audit = api.client.get("/audit", params={"action": "authenticate", "username": "alice", "success": False},
                           headers=api.headers("admin")).json()["entries"]
    assert {entry["ip_address"] for entry in audit} == {ATTACKER} and len(audit) == free
    assert audit[0]["details"]["address_waits_seconds"] == 60


def test_failures_from_many_addresses_slow_new_addresses_briefly_but_not_the_owners(api_factory: Any,
                                                                                    database_url: str) -> None:
    """Spread over addresses, failures only slow the user down, never beyond user_max_delay_seconds, and
    an address that has logged in as the user (the owner's) is spared even that."""
    api = api_factory(database_url, **{**LONG_WAITS, "ORCH_SECURITY__LOCKOUT__USER_MAX_DELAY_SECONDS": "45"})
    lockout = api.settings.security.lockout
    for n in range(lockout.user_max_failures):
        assert log_in(client_at(api, f"198.51.100.{n + 1}"), "alice", "guess").status_code == 401
    stranger = log_in(client_at(api, "192.0.2.1"), "alice")
    assert stranger.status_code == 429
    assert 30 <= int(stranger.headers["retry-after"]) <= lockout.user_max_delay_seconds == 45
    assert log_in(api.client, "alice").status_code == 200  # the owner's address, known from its logins
    assert log_in(client_at(api, "192.0.2.1"), "oscar").status_code == 200  # other users are untouched


def test_throttled_attempt_is_refused_without_running_the_hash(api_factory: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_factory(**LONG_WAITS)
    hashed: list[str] = []
    real = login.verify_password

    def counting(password: str, stored: str) -> bool:
        hashed.append(stored)
        return real(password, stored)

    monkeypatch.setattr(login, "verify_password", counting)
    attacker = client_at(api, ATTACKER)
    free = api.settings.security.lockout.max_failures
    for _ in range(free):
        assert log_in(attacker, "oscar", "guess").status_code == 401
    assert len(hashed) == free
    for name in ("oscar", "oscar", "no-such-user"):
        if name == "no-such-user":  # unknown names are throttled alike: a 429 reveals no name
            for _ in range(free):
                log_in(attacker, name, "guess")
            hashed.clear()
        assert log_in(attacker, name).status_code == 429
    assert hashed == []


def test_delays_grow_with_each_failure_up_to_the_cap(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, ORCH_SECURITY__LOCKOUT__BASE_DELAY_SECONDS="100",
                      ORCH_SECURITY__LOCKOUT__LOCKOUT_SECONDS="500")
    attacker = client_at(api, ATTACKER)
    free = api.settings.security.lockout.max_failures
    for _ in range(free - 1):
        assert log_in(attacker, "vera", "guess").status_code == 401
    assert throttle(api, "vera", ATTACKER).blocked_until is None  # no wait before max_failures
    waits, retry_after = [], []
    for _ in range(4):
        assert log_in(attacker, "vera", "guess").status_code == 401
        row = throttle(api, "vera", ATTACKER)
        waits.append((row.blocked_until - row.last_failed_at).total_seconds())
        refused = log_in(attacker, "vera")
        assert refused.status_code == 429
        retry_after.append(int(refused.headers["retry-after"]))
        end_wait(api, "vera", ATTACKER)
    assert waits == [100, 200, 400, 500]  # doubling from base_delay_seconds, capped at lockout_seconds
    assert all(wait - 30 < after <= wait for wait, after in zip(waits, retry_after, strict=True)), retry_after
    assert log_in(attacker, "vera").status_code == 200  # once the wait is over, the right password works
    assert throttle(api, "vera", ATTACKER).failures == 0


def test_concurrent_failures_all_count(api_factory: Any, database_url: str) -> None:
    """Failures checked at the same time (all before any was counted) are each counted, on every row:
    the counters move by single-statement upserts, never by read-then-write."""
    from concurrent.futures import ThreadPoolExecutor

    api = api_factory(database_url, **LONG_WAITS)
    with serve(api.settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        def attempt(n: int) -> int:
            return client.post("/auth/token", data={"username": "oscar", "password": f"guess-{n}"}).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(attempt, range(24)))
    assert set(statuses) <= {401, 429} and statuses.count(401) >= api.settings.security.lockout.max_failures
    assert throttle(api, "oscar", "127.0.0.1").failures == statuses.count(401)
    assert throttle(api, "oscar", login.ALL_ADDRESSES).failures == statuses.count(401)


def test_admin_unlock_route_ends_the_wait(api_factory: Any) -> None:
    api = api_factory(**LONG_WAITS)
    attacker = client_at(api, ATTACKER)
    for _ in range(api.settings.security.lockout.max_failures):
        log_in(attacker, "vera", "guess")
    assert log_in(attacker, "vera").status_code == 429
    assert api.client.patch("/users/vera", json={"unlock": True}, headers=api.headers("operator")).status_code == 403
    assert api.client.patch("/users/vera", json={"unlock": True}, headers=api.headers("admin")).status_code == 200
    assert log_in(attacker, "vera").status_code == 200
    entry = api.client.get("/audit", params={"action": "user.unlock"},
                           headers=api.headers("admin")).json()["entries"][0]
    assert (entry["username"], entry["resource_id"], entry["details"]["addresses"]) == ("alice", "vera",
                                                                                          ["*", ATTACKER])


# ---- tokens die with the credentials -------------------------------------------------------------
@pytest.mark.parametrize("change", [{"password": PASSWORD + "2"}, {"role": "viewer"}, {"is_active": False},
                                    {"is_active": False, "then": {"is_active": True}}])
def test_old_token_refused_after_a_credential_change_on_another_replica(api_factory: Any, database_url: str,
                                                                        change: dict[str, Any]) -> None:
    """The change is made through a second app on the same database (another replica); this one reads
    identities on every request (identity_cache_seconds 0), so the old token is refused at once."""
    from orch.api.app import create_app

    api = api_factory(database_url, ORCH_SECURITY__IDENTITY_CACHE_SECONDS="0")
    old = api.headers("operator")
    assert api.client.get("/tasks", headers=old).status_code == 200
    with TestClient(create_app(api.settings), base_url="http://127.0.0.1") as replica:
        admin = {"Authorization": f"Bearer {log_in(replica, 'alice').json()['access_token']}"}
        change = dict(change)  # the parameter is shared by both databases' runs
        then = change.pop("then", None)
        for body in (change, then or {}):
            if body:
                assert replica.patch("/users/oscar", json=body, headers=admin).status_code == 200
    refused = api.client.get("/tasks", headers=old)
    assert refused.status_code == 401
    assert ("disabled" if change.get("is_active") is False and not then else "revoked") in refused.json()["detail"]
    if change.get("is_active") is False and not then:
        return
    fresh = log_in(api.client, "oscar", change.get("password", PASSWORD))
    assert api.client.get("/tasks", headers={"Authorization": f"Bearer {fresh.json()['access_token']}"}
                          ).status_code == 200


def test_password_change_here_revokes_at_once_despite_the_identity_cache(api: Api) -> None:
    old = api.headers("viewer")
    assert api.client.get("/tasks", headers=old).status_code == 200  # now cached for identity_cache_seconds
    assert api.client.patch("/users/vera", json={"password": PASSWORD + "2"},
                            headers=api.headers("admin")).status_code == 200
    assert api.client.get("/tasks", headers=old).status_code == 401
    assert api.client.get("/tasks", headers=api.headers("operator")).status_code == 200  # others keep theirs


# ---- hashes --------------------------------------------------------------------------------------
def _scrypt(password: str) -> str:
    """A hash as ORCH wrote them before argon2id (scrypt, N=2^14)."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_scrypt_hash_verifies_and_is_rehashed_to_argon2id_on_login(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    with session_scope(api.settings.database, write_lock=True) as session:
        session.execute(update(User).where(User.username == "oscar").values(password_hash=_scrypt(PASSWORD)))
    assert log_in(api.client, "oscar", "Wr0ng-" + PASSWORD).status_code == 401

    def stored() -> str:
        with session_scope(api.settings.database) as session:
            return str(session.scalar(select(User.password_hash).where(User.username == "oscar")))

    assert stored().startswith("scrypt$")  # a failed login rehashes nothing
    assert log_in(api.client, "oscar").status_code == 200
    assert stored().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert log_in(api.client, "oscar").status_code == 200
    assert api.client.get("/tasks", headers=api.headers("operator")).status_code == 200  # not a credential change
    entry = api.client.get("/audit", params={"action": "authenticate", "username": "oscar", "success": True},
                           headers=api.headers("admin")).json()["entries"][1]
    assert entry["details"] == {"rehashed": "argon2id"}


# ---- tokens in URLs, caching ---------------------------------------------------------------------
def test_query_token_only_on_the_event_stream(api: Api) -> None:
    token = api.tokens["viewer"]
    refused = api.client.get("/tasks", params={"access_token": token})
    assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["detail"]
    assert api.client.get("/users", params={"access_token": api.tokens["admin"]}).status_code == 401
    with serve(api.settings) as url, httpx.stream("GET", f"{url}/sse/events", params={"access_token": token},
                                                  timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")


def test_token_responses_are_not_cached(api: Api) -> None:
    for response in (log_in(api.client, "alice"), log_in(api.client, "alice", "guess")):
        assert response.headers["cache-control"] == "no-store", response.status_code
        assert response.headers["pragma"] == "no-cache"
