"""The data-quality suite every backup copy must pass before it counts (great_expectations).

It runs on the *copy* (or PostgreSQL's verification restore), never on the live database: unique ids,
allowed statuses, priorities and roles, non-null timestamps, and no event pointing at a missing task.
great_expectations is imported here only: it costs seconds to import, and the CLI and API must not pay it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from orch.storage.models import ROLES, TASK_STATUSES

SUITE = "orch_tables"
RESULT_FORMAT = "BOOLEAN_ONLY"
PRIORITIES = [0, 1, 2, 3]
ORPHAN_EVENTS = ("SELECT e.event_id FROM task_events e LEFT JOIN tasks t ON t.task_id = e.task_id "
                 "WHERE t.task_id IS NULL")


def expectations(tables: set[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per table (or named query), the expectations as (class name, arguments); only tables present."""
    plan: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "tasks": [
            ("ExpectColumnValuesToBeUnique", {"column": "task_id"}),
            ("ExpectColumnValuesToNotBeNull", {"column": "task_id"}),
            ("ExpectColumnValuesToNotBeNull", {"column": "core_id"}),
            ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": list(TASK_STATUSES)}),
            ("ExpectColumnValuesToBeInSet", {"column": "priority", "value_set": PRIORITIES}),
            ("ExpectColumnValuesToNotBeNull", {"column": "created_at"}),
            ("ExpectColumnValuesToNotBeNull", {"column": "updated_at"}),
        ],
        # event_id is an INTEGER PRIMARY KEY (SQLite's rowid, PostgreSQL's serial key): it cannot repeat,
        # and checking it was the suite's most expensive query on a large database.
        "task_events": [
            ("ExpectColumnValuesToNotBeNull", {"column": "event_type"}),
            ("ExpectColumnValuesToNotBeNull", {"column": "timestamp"}),
        ],
        "users": [
            ("ExpectColumnValuesToBeUnique", {"column": "username"}),
            ("ExpectColumnValuesToBeInSet", {"column": "role", "value_set": list(ROLES)}),
        ],
        "audit_log": [("ExpectColumnValuesToNotBeNull", {"column": "timestamp"})],
    }
    chosen = {table: items for table, items in plan.items() if table in tables}
    if {"tasks", "task_events"} <= tables:
        chosen["events_without_task"] = [("ExpectTableRowCountToEqual", {"value": 0})]
    return chosen


def validate(url: str, tables: set[str]) -> dict[str, Any]:
    """Run the suite against ``url`` (a SQLAlchemy URL of the copy); a summary fit for the catalog.

    ``BOOLEAN_ONLY`` results: the default format also fetches samples of unexpected rows for every
    expectation, which on a large copy costs more than the checks. Failed ones are re-run with
    ``SUMMARY`` so the refusal can say how many rows broke the rule.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    _quiet(context)
    with warnings.catch_warnings():  # "a more specific SqliteDatasource may be more appropriate": one generic
        warnings.simplefilter("ignore")  # SQL source serves SQLite copies and PostgreSQL scratch databases alike
        source = context.data_sources.add_sql(name="orch_copy", connection_string=url)
    failed: list[dict[str, Any]] = []
    evaluated = 0
    for name, items in expectations(tables).items():
        asset = (source.add_query_asset(name=name, query=ORPHAN_EVENTS) if name == "events_without_task"
                 else source.add_table_asset(name=name, table_name=name))
        suite = gx.ExpectationSuite(name=f"{SUITE}.{name}",
                                    expectations=[getattr(gxe, kind)(**args) for kind, args in items])
        batch = asset.add_batch_definition_whole_table("all").get_batch()
        for outcome in batch.validate(suite, result_format=RESULT_FORMAT).results:
            evaluated += 1
            if not outcome.success:
                config = outcome.expectation_config
                detail = batch.validate(config.to_domain_obj(), result_format="SUMMARY")
                summary = detail.result or {}
                failed.append({"table": name, "expectation": config.type, "column": config.kwargs.get("column"),
                               "unexpected_count": summary.get("unexpected_count", summary.get("observed_value")),
                               "error": (detail.exception_info or {}).get("exception_message")})
    return {"suite": SUITE, "success": not failed and evaluated > 0, "evaluated": evaluated, "failed": failed}


def describe_failure(validation: dict[str, Any]) -> str:
    """One line naming what failed, e.g. ``tasks.status expect_column_values_to_be_in_set (1 rows)``."""
    parts = [f"{f['table']}{'.' + f['column'] if f['column'] else ''} {f['expectation']}"
             + (f" ({f['unexpected_count']})" if f["unexpected_count"] is not None else "")
             for f in validation["failed"][:5]]
    return "data-quality suite failed: " + "; ".join(parts or ["no expectations evaluated"])


def _quiet(context) -> None:  # type: ignore[no-untyped-def]
    """No progress bars on stderr: they would flood flow-run logs and the CLI's output."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
