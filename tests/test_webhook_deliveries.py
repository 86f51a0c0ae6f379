"""The webhook delivery record's group commits, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from orch.api.deliveries import DeliveryLog
from orch.config.schema import Settings
from orch.storage.engine import session_scope
from orch.storage.models import WebhookDelivery


def _stored(settings: Settings) -> dict[str, str]:
    with session_scope(settings.database) as session:
        return dict(session.execute(select(WebhookDelivery.signature, WebhookDelivery.event)).all())


def test_concurrent_deliveries_are_each_answered_and_a_replay_only_refuses_itself(settings: Settings) -> None:
    log = DeliveryLog(settings.database, tolerance_seconds=300)

    async def burst() -> list[bool]:
        digests = [f"{n:064x}" for n in range(200)] + [f"{7:064x}", f"{150:064x}"]  # two replays in the burst
        return list(await asyncio.gather(*(log.remember(d, "ping") for d in digests)))

    answers = asyncio.run(burst())
    assert answers[:200] == [True] * 200 and answers[200:] == [False, False]
    assert len(_stored(settings)) == 200
    # later, one at a time: an earlier delivery is a replay, a new one is stored, a forgotten one may return
    assert asyncio.run(log.remember(f"{3:064x}", "ping")) is False
    assert asyncio.run(log.remember("f" * 64, "task.completed")) is True
    asyncio.run(log.forget("f" * 64))
    assert "f" * 64 not in _stored(settings)
    assert asyncio.run(log.remember("f" * 64, "task.completed")) is True


def test_a_database_error_reaches_every_waiter_and_the_log_recovers(settings: Settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from orch.storage.engine import get_engine

    log = DeliveryLog(settings.database, tolerance_seconds=300)
    table = WebhookDelivery.__table__
    table.drop(get_engine(settings.database))

    async def burst() -> list[object]:
        return list(await asyncio.gather(*(log.remember(f"{n:064x}", "ping") for n in range(10)),
                                         return_exceptions=True))

    answers = asyncio.run(burst())
    assert len(answers) == 10 and all(isinstance(answer, SQLAlchemyError) for answer in answers), answers
    table.create(get_engine(settings.database))  # the database is back: the next delivery is stored
    assert asyncio.run(log.remember(f"{1:064x}", "ping")) is True
    with session_scope(settings.database) as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
