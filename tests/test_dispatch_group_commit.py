"""Single dispatches in group commits (``orch.api.dispatch_group``), over real HTTP on a real SQLite file
and a real PostgreSQL database; and the audit file's masking of the lines those groups write."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import PASSWORD, add_users, make_settings, serve_app
from sqlalchemy import func, select, text

from orch.audit import Caller, configure_audit_log, record_audit
from orch.config.schema import Settings
from orch.redaction import register_secret
from orch.storage.engine import get_engine, session_scope
from orch.storage.models import AuditRecord, Task, TaskEvent

OPERATOR = "oscar"  # api_fixtures.ROLE_USERS


class Served:
    def __init__(self, url: str, settings: Settings, token: str) -> None:
        self.url, self.settings = url, settings
        self.headers = {"Authorization": f"Bearer {token}"}

    def post_all(self, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
        """Every body as its own ``POST /dispatch``, all at once, each on a connection of its own."""
        async def send() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=self.url, headers=self.headers, limits=limits,
                                         timeout=120) as client:
                return list(await asyncio.gather(*(client.post("/dispatch", json=body) for body in bodies)))
        return asyncio.run(send())


@pytest.fixture
def served(database_url: str, isolated_env: Path) -> Iterator[Served]:
    settings = make_settings(isolated_env, database_url)
    add_users(settings)
    with serve_app(settings) as (url, _app):
        answer = httpx.post(url + "/auth/token", data={"username": OPERATOR, "password": PASSWORD}, timeout=30)
        assert answer.status_code == 200, answer.text
        yield Served(url, settings, answer.json()["access_token"])
    configure_audit_log(None)


def _tasks(settings: Settings) -> dict[str, Task]:
    with session_scope(settings.database) as session:
        tasks = {task.task_id: task for task in session.scalars(select(Task))}
        session.expunge_all()
        return tasks


def task_view_priority(task: Task) -> str:
    from orch.dispatch.ordering import Priority

    return Priority(task.priority).label


def _count(settings: Settings, query: Any) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(query))


def _audit_lines(settings: Settings, action: str) -> list[dict[str, Any]]:
    path = Path(settings.logging.audit_file or "")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    return [line for line in lines if line["action"] == action]


def test_concurrent_single_dispatches_each_get_their_own_row_and_answer(served: Served) -> None:
    # 201 at once: 150 with keys (keys 0-49 sent twice), 49 without, one the dispatch rules refuse and one
    # its sender may not cause
    bodies: list[dict[str, Any]] = [{"core_id": f"core-{n % 100 % 7}", "action": "noop", "idempotency_key":
                                     f"key-{n % 100}", "priority": "high" if n % 100 % 3 else "normal"}
                                    for n in range(150)]
    bodies += [{"core_id": f"core-{n % 5}", "action": "noop", "metadata": {"source": f"n{n}"}} for n in range(49)]
    bodies.insert(77, {"core_id": "core-1", "action": "noop", "params": {"not": "allowed"}})
    # an operator may not start `restore` by any path: refused alone, as the only request of its kind
    bodies.insert(123, {"core_id": "core-2", "action": "run-deployment", "params": {"name": "restore/manual"}})
    answers = served.post_all(bodies)

    assert answers[77].status_code == 422 and "params" in answers[77].text, answers[77].text
    assert answers[123].status_code == 403, answers[123].text
    rest = [(body, answer) for index, (body, answer) in enumerate(zip(bodies, answers, strict=True))
            if index not in (77, 123)]
    assert all(answer.status_code == 202 for _, answer in rest), {a.status_code for _, a in rest}

    tasks = _tasks(served.settings)
    assert len(tasks) == 100 + 49  # one per key, one per keyless request, none for the refused one
    by_key: dict[str, list[dict[str, Any]]] = {}
    for body, answer in rest:
        accepted = answer.json()
        task = tasks[accepted["task_id"]]  # every answer names a row...
        assert (task.core_id, task.action, task.owner) == (body["core_id"], "noop", OPERATOR)  # ...that is its own
        assert accepted["core_id"] == task.core_id and accepted["status"] == "queued"
        assert accepted["priority"] == body.get("priority", "normal") == task_view_priority(task)
        if "idempotency_key" in body:
            assert task.idempotency_key == body["idempotency_key"]
            by_key.setdefault(body["idempotency_key"], []).append(accepted)
        else:
            assert accepted["created"] and task.meta["source"] == body["metadata"]["source"]
    for key, same in by_key.items():  # a key sent twice: one task, created by exactly one of the two
        assert len({a["task_id"] for a in same}) == 1, key
        assert sorted(a["created"] for a in same) == ([False, True] if len(same) == 2 else [True]), key
    assert _count(served.settings, select(func.count()).select_from(TaskEvent)
                  .where(TaskEvent.event_type == "task.created")) == 149
    with session_scope(served.settings.database) as session:  # every created task audited once, with its sender
        audited = list(session.scalars(select(AuditRecord).where(AuditRecord.action == "task.create",
                                                                 AuditRecord.success.is_(True))))
        named = [task_id for record in audited for task_id in record.details["task_ids"]]
        assert all(record.actor == OPERATOR and record.ip_address == "127.0.0.1" for record in audited)
    assert sorted(named) == sorted(tasks)
    lines = [line for line in _audit_lines(served.settings, "task.create") if line["success"]]
    assert sorted(task_id for line in lines for task_id in line["details"]["task_ids"]) == sorted(tasks)
    with session_scope(served.settings.database) as session:  # the refusal is audited as one
        refused = list(session.scalars(select(AuditRecord).where(AuditRecord.success.is_(False))))
    assert [(r.action, r.actor, r.details["action"]) for r in refused] == [("task.create", OPERATOR, "run-deployment")]


def test_a_full_queue_refuses_exactly_the_dispatches_above_its_limit(served: Served) -> None:
    served.settings.dispatch.max_queue_depth = 10
    first = served.post_all([{"core_id": "core-a", "action": "noop", "idempotency_key": f"early-{n}"}
                             for n in range(4)])
    assert [a.status_code for a in first] == [202] * 4

    bodies = [{"core_id": f"core-{n % 3}", "action": "noop"} for n in range(20)]
    bodies.append({"core_id": "core-a", "action": "noop", "idempotency_key": "early-2"})  # known: no new row
    answers = served.post_all(bodies)

    codes = [a.status_code for a in answers[:20]]
    assert codes.count(202) == 6 and codes.count(429) == 14, codes
    assert all(a.headers.get("Retry-After") for a in answers[:20] if a.status_code == 429)
    assert answers[20].status_code == 202 and answers[20].json()["task_id"] == first[2].json()["task_id"]
    assert answers[20].json()["created"] is False
    assert len(_tasks(served.settings)) == 10
    with session_scope(served.settings.database) as session:
        audited = session.scalars(select(AuditRecord.details).where(AuditRecord.action == "task.create"))
        named = sorted(task_id for details in audited for task_id in details["task_ids"])
    assert named == sorted(_tasks(served.settings))
    assert sum(line["details"]["count"] for line in _audit_lines(served.settings, "task.create")) == 10


def test_a_database_error_reaches_every_waiter_and_the_next_group_works(served: Served) -> None:
    engine = get_engine(served.settings.database)
    with engine.begin() as connection:  # the task's event has nowhere to go: every group fails at its insert
        connection.execute(text("ALTER TABLE task_events RENAME TO task_events_away"))
    try:
        answers = served.post_all([{"core_id": f"core-{n}", "action": "noop"} for n in range(30)])
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE task_events_away RENAME TO task_events"))
    assert [a.status_code for a in answers] == [503] * 30, {a.status_code for a in answers}
    assert all(a.json()["detail"].startswith("database unavailable") for a in answers)
    assert _tasks(served.settings) == {} and _audit_lines(served.settings, "task.create") == []

    again = served.post_all([{"core_id": f"core-{n}", "action": "noop"} for n in range(5)])
    assert [a.status_code for a in again] == [202] * 5
    assert set(_tasks(served.settings)) == {a.json()["task_id"] for a in again}


def test_a_row_the_database_refuses_fails_only_its_own_request(pg_url: str, isolated_env: Path) -> None:
    """PostgreSQL cannot store a NUL in text: that request fails alone, its group's others are queued."""
    from orch.api.dispatch_group import DispatchGroup
    from orch.dispatch.request import validate

    settings = make_settings(isolated_env, pg_url)
    group = DispatchGroup(settings)
    tasks = [validate({"core_id": "core-a", "action": "noop", "idempotency_key": key}, settings)
             for key in ("one", "two\x00", "three", "one")]

    async def together() -> list[object]:
        return list(await asyncio.gather(*(group.enqueue(t, "owner", Caller()) for t in tasks),
                                         return_exceptions=True))

    one, refused, three, one_again = asyncio.run(together())
    assert isinstance(refused, Exception), refused
    assert isinstance(one, tuple) and isinstance(three, tuple) and isinstance(one_again, tuple)
    assert one[1] is True and three[1] is True and one_again == (one_again[0], False)
    assert one_again[0]["task_id"] == one[0]["task_id"]
    assert {t.idempotency_key for t in _tasks(settings).values()} == {"one", "three"}


@contextmanager
def _listening(settings: Settings, name: str, handler: Callable[..., None]) -> Iterator[None]:
    """``handler`` on ``settings``' engine's event ``name`` meanwhile."""
    from sqlalchemy import event

    engine = get_engine(settings.database)
    event.listen(engine, name, handler)
    try:
        yield
    finally:
        event.remove(engine, name, handler)


def _batch(settings: Settings, size: int, **body: Any) -> Any:
    from orch.dispatch.new_tasks import prepare
    from orch.dispatch.request import validate

    return prepare(settings, [validate({"core_id": f"core-{n % 4}", "action": "noop", **body}, settings)
                              for n in range(size)], "owner")


def test_on_sqlite_batches_and_single_dispatches_arriving_together_commit_together(isolated_env: Path) -> None:
    """SQLite, where writers take one turn: three batches of 10 and four single dispatches at once, the
    queue's limit at 25, are one write transaction. Requests are written in arrival order (the singles at
    the place of the first), so the last batch is the one that would overfill the queue: it is refused
    whole, nothing of it written, and every other request is queued. (On PostgreSQL a batch keeps a
    transaction of its own, written beside the others.)"""
    from orch.api.dispatch_group import DispatchGroup
    from orch.dispatch.errors import QueueFull
    from orch.dispatch.request import validate

    settings = make_settings(isolated_env, f"sqlite:///{isolated_env / 'orch.db'}")
    settings.dispatch.max_queue_depth = 25
    group = DispatchGroup(settings)
    single = validate({"core_id": "core-9", "action": "noop"}, settings)
    first, second, third = (_batch(settings, 10) for _ in range(3))
    caller = Caller(ip_address="192.0.2.1")

    async def together() -> list[object]:
        return list(await asyncio.gather(
            group.enqueue_batch(first, caller), group.enqueue(single, "owner", caller),
            group.enqueue(single, "owner", caller), group.enqueue_batch(second, caller),
            group.enqueue(single, "owner", caller), group.enqueue(single, "owner", caller),
            group.enqueue_batch(third, caller), return_exceptions=True))

    transactions: list[str] = []  # SQLite's write transactions; its reads begin plainly
    with _listening(settings, "before_cursor_execute", lambda _conn, _cursor, statement, *_args: (
            transactions.append(statement) if statement == "BEGIN IMMEDIATE" else None)):
        outcomes = asyncio.run(together())
    assert len(transactions) == 1, transactions
    assert isinstance(outcomes[6], QueueFull), outcomes[6]
    accepted = [outcomes[0], outcomes[3]]
    assert all(isinstance(batch, list) and len(batch) == 10 and all(created for _, created in batch)
               for batch in accepted), accepted
    singles = [outcomes[i] for i in (1, 2, 4, 5)]
    assert all(isinstance(one, tuple) and one[1] for one in singles), singles
    stored = _tasks(settings)
    answered = {view["task_id"] for batch in accepted for view, _ in batch} | {one[0]["task_id"] for one in singles}
    assert set(stored) == answered and len(stored) == 24
    assert not {row["task_id"] for row in third.rows} & set(stored)
    with session_scope(settings.database) as session:  # an audit entry per batch, one for the sender's singles
        audited = sorted(len(details["task_ids"]) for details in session.scalars(
            select(AuditRecord.details).where(AuditRecord.action == "task.create")))
    assert audited == [4, 10, 10]


def test_on_sqlite_a_group_of_single_dispatches_is_one_transaction_and_nothing_before_it(isolated_env: Path) -> None:
    """The one group writer prepares each group and writes it. A read transaction of its own for the
    estimate's counts lengthened every group's cycle: single accepts were higher in 4 pairs of 4 with
    the counts read inside the transaction. So a group's only transaction is its write, and the counts
    are read in it."""
    from orch.api.dispatch_group import DispatchGroup
    from orch.dispatch.request import validate

    settings = make_settings(isolated_env, f"sqlite:///{isolated_env / 'orch.db'}")
    group = DispatchGroup(settings)
    singles = [validate({"core_id": f"core-{n % 3}", "action": "noop"}, settings) for n in range(6)]
    statements: list[str] = []

    async def together() -> list[object]:
        return list(await asyncio.gather(*(group.enqueue(task, "owner", Caller()) for task in singles)))

    with _listening(settings, "before_cursor_execute",
                    lambda _conn, _cursor, statement, *_args: statements.append(statement)):
        accepted = asyncio.run(together())
    assert all(isinstance(one, tuple) and one[1] for one in accepted)
    assert statements[0] == "BEGIN IMMEDIATE" and statements.count("BEGIN IMMEDIATE") == 1, statements[:3]
    assert "BEGIN" not in statements
    assert any("FROM core_load" in s for s in statements)  # the estimate's counts, kept by the database


def test_on_postgresql_each_batch_keeps_a_transaction_of_its_own(pg_url: str, isolated_env: Path) -> None:
    """PostgreSQL runs transactions side by side: batches that waited for the one group writer were
    accepted at about 60 % of the rate of batches written each in its own transaction, at once."""
    from orch.api.dispatch_group import DispatchGroup

    settings = make_settings(isolated_env, pg_url)
    group = DispatchGroup(settings)
    batches = [_batch(settings, 10) for _ in range(3)]
    sent: list[tuple[int, str]] = []  # (connection, statement or COMMIT), in order

    async def together() -> list[object]:
        return list(await asyncio.gather(*(group.enqueue_batch(batch, Caller()) for batch in batches)))

    with _listening(settings, "commit", lambda connection: sent.append((id(connection), "COMMIT"))), \
            _listening(settings, "before_cursor_execute",
                       lambda connection, _cursor, statement, *_args: sent.append((id(connection), statement))):
        accepted = asyncio.run(together())
    transactions: dict[int, list[list[str]]] = {}
    for connection, statement in sent:
        ongoing = transactions.setdefault(connection, [[]])
        ongoing[-1].append(statement)
        if statement == "COMMIT":
            ongoing.append([])
    inserts = [sum(s.startswith("INSERT INTO tasks ") for s in transaction)
               for per_connection in transactions.values() for transaction in per_connection]
    assert sorted(n for n in inserts if n) == [1, 1, 1] and len(_tasks(settings)) == 30  # three commits
    assert all(isinstance(batch, list) and len(batch) == 10 for batch in accepted)


def test_a_batch_the_database_refuses_fails_alone_and_whole(settings: Settings) -> None:
    """A batch naming one idempotency key twice cannot be stored: that batch fails, all of it, and the
    batch and the single dispatch of its group are queued."""
    from orch.api.dispatch_group import DispatchGroup
    from orch.dispatch.request import validate

    group = DispatchGroup(settings)
    good, twice = _batch(settings, 5), _batch(settings, 2, idempotency_key="same")
    single = validate({"core_id": "core-1", "action": "noop", "idempotency_key": "alone"}, settings)

    async def together() -> list[object]:
        return list(await asyncio.gather(group.enqueue_batch(good, Caller()), group.enqueue_batch(twice, Caller()),
                                         group.enqueue(single, "owner", Caller()), return_exceptions=True))

    accepted, refused, alone = asyncio.run(together())
    assert isinstance(refused, Exception), refused
    assert isinstance(accepted, list) and isinstance(alone, tuple), (accepted, alone)
    assert set(_tasks(settings)) == {view["task_id"] for view, _ in accepted} | {alone[0]["task_id"]}


# --- the audit file --------------------------------------------------------------------------------

@pytest.fixture
def audit_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.log"
    configure_audit_log(str(path))
    yield path
    configure_audit_log(None)


def test_audit_lines_are_masked_once_and_stay_valid_json(settings: Settings, audit_file: Path) -> None:
    """The file's filter used to rescan the JSON line: ``password="x"`` inside a value then lost its escaped
    quote instead of its value (the secret in the file, the line no longer JSON)."""
    register_secret("registered-Secret-0123")
    with session_scope(settings.database, write_lock=True) as session:
        record_audit(session, actor="ops registered-Secret-0123", action="task.create", resource="task",
                     user_agent="curl/8 Authorization: Bearer abc.def.ghi-token-value",
                     details={"note": 'password="hunter2-quoted"', "privatekey": "pk-material-0123",
                              "nested": [{"url": "postgresql://u:url-Password-99@db/x"}, {"api-Key": "k-0123456"}],
                              "plain": "nothing to hide"})
    text_ = audit_file.read_text(encoding="utf-8")
    for secret in ("hunter2-quoted", "pk-material-0123", "url-Password-99", "k-0123456", "registered-Secret-0123",
                   "abc.def.ghi-token-value"):
        assert secret not in text_, secret
    (line,) = [json.loads(raw) for raw in text_.splitlines()]
    assert line["details"]["plain"] == "nothing to hide" and line["details"]["note"] == 'password="***"'
    assert line["details"]["privatekey"] == "***" and line["action"] == "task.create"


def test_other_lines_in_the_audit_file_are_still_redacted(audit_file: Path) -> None:
    logging.getLogger("orch.audit.trail").info("token=%s and a copied line", "plain-Token-value-0123")
    assert "plain-Token-value-0123" not in audit_file.read_text(encoding="utf-8")


def test_a_rolled_back_savepoint_takes_its_audit_line_with_it(settings: Settings, audit_file: Path) -> None:
    with session_scope(settings.database, write_lock=True) as session:
        record_audit(session, actor="a", action="kept.before", resource="x")
        with pytest.raises(RuntimeError), session.begin_nested():
            record_audit(session, actor="a", action="undone", resource="x")
            raise RuntimeError("this request's problem")
        with session.begin_nested():
            record_audit(session, actor="a", action="kept.after", resource="x")
    assert [json.loads(raw)["action"] for raw in audit_file.read_text(encoding="utf-8").splitlines()] == [
        "kept.before", "kept.after"]
    with session_scope(settings.database) as session:
        assert sorted(session.scalars(select(AuditRecord.action))) == ["kept.after", "kept.before"]


@pytest.mark.parametrize("kind", ["singles", "batch"])
def test_on_postgresql_the_api_folds_the_count_rows_it_writes(pg_url: str, isolated_env: Path, kind: str) -> None:
    """PostgreSQL's triggers add a count row per statement and core (orch/dispatch/core_load.py); the
    dispatcher folds them, and so does the API's writer as it goes (at most once a second, the first time
    at once): with the worker down, accepts would otherwise read a core's counts over ever more rows."""
    from orch.api.dispatch_group import DispatchGroup
    from orch.dispatch.request import validate
    from orch.storage.models import CoreLoad

    settings = make_settings(isolated_env, pg_url)
    group = DispatchGroup(settings)
    singles = [validate({"core_id": f"core-{n % 3}", "action": "noop"}, settings) for n in range(6)]

    async def accept() -> object:
        if kind == "batch":
            return await group.enqueue_batch(_batch(settings, 8), Caller())
        return await asyncio.gather(*(group.enqueue(task, "owner", Caller()) for task in singles))

    asyncio.run(accept())
    with session_scope(settings.database) as session:
        rows = session.execute(select(CoreLoad.core_id, CoreLoad.part, CoreLoad.queued)
                               .order_by(CoreLoad.core_id)).all()
    expected = {"singles": [2, 2, 2], "batch": [2, 2, 2, 2]}[kind]
    assert [(part, queued) for _core, part, queued in rows] == [(0, n) for n in expected], rows
