"""The ``ops-report`` flow on the real Prefect server: it reads this installation's logs and publishes
the guide's log and performance analysis as artifacts an operator can read in the UI."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import yaml


def _line(**fields: object) -> str:
    return json.dumps({"timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                       "level": "INFO", **fields}) + "\n"


def _write_week_of_logs(home: Path) -> None:
    logs = home / "logs"
    logs.mkdir()
    requests = [_line(event_type="http_request", method="GET", endpoint="/health", status=200, duration_ms=float(ms))
                for ms in range(1, 21)]
    requests.append(_line(event_type="http_request", method="POST", endpoint="/dispatch", status=500,
                          duration_ms=2500.0))
    old = json.dumps({"timestamp": "2020-01-01T00:00:00+00:00", "level": "ERROR", "message": "long ago"}) + "\n"
    (logs / "orch-next.log").write_text("".join(requests) + _line(level="ERROR", message="database is locked")
                                        + old + "not json\n")
    (logs / "audit.log").write_text(_line(action="authenticate", success=False, username="alice",
                                          ip_address="10.1.1.1"))


def test_weekly_report_publishes_markdown_table_and_chart(prefect_server: str, isolated_env: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.ops_report import ops_report
    from tasks.ops_report import (
        LOG_ANALYSIS_KEY,
        PERFORMANCE_KEY,
        PERFORMANCE_TABLE_KEY,
    )

    _write_week_of_logs(isolated_env)
    state = ops_report(days=7, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert {k: summary[k] for k in ("requests", "errors", "slow_requests", "auth_failures", "task_failures")} == {
        "requests": 21, "errors": 1, "slow_requests": 1, "auth_failures": 1, "task_failures": 0}

    analysis = Artifact.get(LOG_ANALYSIS_KEY)
    assert analysis is not None and analysis.type == "markdown"
    assert "| 1 | database is locked |" in analysis.data and "long ago" not in analysis.data
    assert "| 1 | alice |" in analysis.data

    performance = Artifact.get(PERFORMANCE_KEY)
    assert performance is not None and performance.type == "markdown"
    assert "| POST /dispatch | 1 | 2,500.00 | 2,500.00 | 2,500.00 | 1 |" in performance.data
    encoded = performance.data.split("data:image/svg+xml;base64,", 1)[1].split(")", 1)[0]
    chart = ElementTree.fromstring(base64.b64decode(encoded))
    assert chart.tag == "{http://www.w3.org/2000/svg}svg"

    table = Artifact.get(PERFORMANCE_TABLE_KEY)
    assert table is not None and table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {row["endpoint"]: row["requests"] for row in rows} == {"POST /dispatch": 1, "GET /health": 20}


def test_missing_logs_fail_the_run_with_the_path(prefect_server: str, isolated_env: Path) -> None:
    from flows.ops_report import ops_report

    state = ops_report(days=7, return_state=True)
    assert state.is_failed()
    assert "no log found at" in state.message and str(isolated_env / "logs" / "orch-next.log") in state.message


def test_weekly_deployment_is_in_prefect_yaml() -> None:
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    weekly = next(d for d in spec["deployments"] if d["entrypoint"] == "flows/ops_report.py:ops_report")
    assert weekly["work_pool"]["name"] == "orch-process"
    assert weekly["schedules"] == [{"cron": "0 6 * * 1", "timezone": "UTC"}]



def _task_runs_of(flow_run_id: object) -> list[object]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[object]:
        async with get_client() as prefect:
            return list(await prefect.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id]))))

    return asyncio.run(read())


def test_log_paths_outside_the_log_directories_are_refused_and_nothing_is_read(
        prefect_server: str, isolated_env: Path, tmp_path: Path) -> None:
    """An operator may start ops-report (API, run-deployment, Prefect): its file parameters must not turn
    it into a reader of any file on the host. Refused in the flow, before any task runs."""
    from flows.ops_report import ops_report

    _write_week_of_logs(isolated_env)
    secret = tmp_path / "secret.log"
    secret.write_text(_line(level="ERROR", message="TOP-SECRET"))
    (isolated_env / "logs" / "leads-out.log").symlink_to(secret)
    for parameters in ({"log_paths": ["/etc/passwd"]}, {"audit_paths": [str(secret)]},
                       {"log_paths": [str(isolated_env / "logs" / ".." / ".." / "secret.log")]},
                       {"log_paths": [str(isolated_env / "logs" / "leads-out.log")]},
                       {"log_paths": ["-"]}):
        state = ops_report(days=7, return_state=True, **parameters)
        assert state.is_failed(), parameters
        assert "outside the configured log directories" in state.message and "TOP-SECRET" not in state.message
        assert _task_runs_of(state.state_details.flow_run_id) == []  # no task ran: nothing was read

    inside = ops_report(days=7, log_paths=[str(isolated_env / "logs" / "orch-next.log")], return_state=True)
    assert inside.is_completed(), inside.message
    assert inside.result()["requests"] == 21
    assert len(_task_runs_of(inside.state_details.flow_run_id)) == 4
