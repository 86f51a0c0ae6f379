"""The parts of Prefect ORCH's in-process worker relies on, checked by name before anything runs.

``orch.stack.inprocess.InProcessWorker`` subclasses Prefect's ``BaseWorker`` and overrides one hook that is
not public API (``_get_scheduled_flow_runs``); the rest of what it uses is public but easy to change in a
minor release (a renamed parameter, a property that becomes a method). The end-to-end tests would fail on
such an upgrade too, but with a timeout or a traceback from a worker thread; these fail with the name of
what changed, so ``make lock UPGRADE=prefect`` tells at once whether the worker needs work.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest


def _resolve(dotted: str) -> Any:
    """``prefect.workers.base:BaseWorker.start`` -> the object, failing with the missing name."""
    module_name, _, attribute_path = dotted.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"Prefect contract: module {module_name} is gone ({exc})")
    for part in attribute_path.split("."):
        if not hasattr(found, part):
            pytest.fail(f"Prefect contract: {dotted} is gone (no attribute {part!r})")
        found = inspect.getattr_static(found, part) if inspect.isclass(found) else getattr(found, part)
    return found


def _parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


# (what, is it a coroutine function, the parameters ORCH passes by name, must it be callable with just these)
CALLABLES = [
    ("prefect.workers.base:BaseWorker.__init__", False,
     {"work_pool_name", "name", "prefetch_seconds", "create_pool_if_not_found"}),
    ("prefect.workers.base:BaseWorker.start", True, set()),
    ("prefect.workers.base:BaseWorker.get_and_submit_flow_runs", True, set()),
    ("prefect.workers.base:BaseWorker._get_scheduled_flow_runs", True, set()),
    ("prefect.workers.base:BaseWorker.run", True, {"flow_run", "configuration", "task_status"}),
    ("prefect.workers.base:BaseWorker.kill_infrastructure", True,
     {"infrastructure_pid", "configuration", "grace_seconds"}),
    ("prefect.flow_engine:run_flow", False, {"flow", "flow_run", "return_type", "error_logger"}),
    ("prefect.logging.loggers:flow_run_logger", False, {"flow_run"}),
    ("prefect.events.clients:get_events_subscriber", False, {"filter", "reconnect_on_clean_close"}),
    ("prefect.client.orchestration:PrefectClient.set_flow_run_state", True, {"flow_run_id", "state"}),
    ("prefect.client.orchestration:PrefectClient.read_deployment", True, {"deployment_id"}),
    ("prefect.context:refresh_global_settings_context", False, set()),  # the tests' session server (conftest)
    # The executor label on the runs ORCH executes (flows/dispatch.py, the in-process worker): zombie evidence.
    ("prefect.client.orchestration:PrefectClient.update_flow_run_labels", True, {"flow_run_id", "labels"}),
    ("prefect.client.orchestration:SyncPrefectClient.update_flow_run_labels", False, {"flow_run_id", "labels"}),
    ("prefect.client.orchestration:SyncPrefectClient.update_flow_run", False, {"flow_run_id", "tags"}),
    # orch/notify.py finds ORCH's notification blocks by type slug (the domain core never imports blocks/).
    ("prefect.blocks.core:Block.get_block_class_from_key", False, {"key"}),
    # deployments/deploy.py creates the deployments in process instead of running `prefect deploy --all`.
    ("prefect.utilities.callables:parameter_schema_from_entrypoint", False, {"entrypoint"}),
    ("prefect.client.orchestration:SyncPrefectClient.create_flow_from_name", False, {"flow_name"}),
    ("prefect.client.orchestration:SyncPrefectClient.create_deployment", False,
     {"flow_id", "name", "version", "schedules", "parameters", "description", "work_pool_name", "work_queue_name",
      "tags", "entrypoint", "parameter_openapi_schema", "enforce_parameter_schema", "pull_steps", "job_variables"}),
]


@pytest.mark.parametrize(("dotted", "is_coroutine", "names"), CALLABLES, ids=[c[0].split(":")[1] for c in CALLABLES])
def test_the_callables_the_worker_uses_keep_their_shape(dotted: str, is_coroutine: bool, names: set[str]) -> None:
    found = _resolve(dotted)
    function = found.__func__ if isinstance(found, (staticmethod, classmethod)) else found
    assert callable(function), f"Prefect contract: {dotted} is no longer callable"
    assert inspect.iscoroutinefunction(function) == is_coroutine, (
        f"Prefect contract: {dotted} is {'no longer' if is_coroutine else 'now'} a coroutine function")
    parameters = _parameters(function)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = sorted(name for name in names if name not in parameters and not takes_kwargs)
    assert not missing, f"Prefect contract: {dotted} no longer takes {missing} (it takes {list(parameters)})"
    required = sorted(name for name, p in parameters.items()
                      if name not in {"self", "cls"} | names and p.default is inspect.Parameter.empty
                      and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
    assert not required, f"Prefect contract: {dotted} now requires {required}, which ORCH does not pass"


def test_prefect_still_calls_the_scheduling_hook_the_worker_overrides() -> None:
    """The override of ``_get_scheduled_flow_runs`` (runs due now, a timed poll for those due soon) is dead
    code if ``get_and_submit_flow_runs`` stops calling it: scheduled sweeps would then start up to a poll late."""
    from prefect.workers.base import BaseWorker

    source = inspect.getsource(BaseWorker.get_and_submit_flow_runs)
    assert "self._get_scheduled_flow_runs()" in source, (
        "Prefect contract: BaseWorker.get_and_submit_flow_runs no longer calls self._get_scheduled_flow_runs()")


def test_a_new_worker_has_the_attributes_the_in_process_worker_reads() -> None:
    from orch.stack.inprocess import InProcessWorker

    worker = InProcessWorker(work_pool_name="contract-check", name="contract-check")
    assert worker.is_setup is False, "Prefect contract: BaseWorker.is_setup is gone or no longer starts False"
    for name in ("client", "work_pool"):
        kind = type(inspect.getattr_static(InProcessWorker, name, None))
        assert kind is property, f"Prefect contract: BaseWorker.{name} is no longer a property ({kind.__name__})"
        with pytest.raises(RuntimeError):  # not set up yet: what the worker waits on before subscribing
            getattr(worker, name)


@pytest.mark.parametrize(("model", "fields"), [
    ("prefect.client.schemas.responses:WorkerFlowRunResponse", {"flow_run"}),
    ("prefect.client.schemas.objects:FlowRun", {"id", "name", "deployment_id", "next_scheduled_start_time",
                                                "expected_start_time"}),
    ("prefect.workers.base:BaseWorkerResult", {"identifier", "status_code"}),
    ("prefect.client.schemas.responses:OrchestrationResult", {"status"}),
], ids=lambda value: value.rsplit(":", 1)[-1] if isinstance(value, str) else "fields")
def test_the_models_the_worker_reads_keep_their_fields(model: str, fields: set[str]) -> None:
    found = _resolve(model)
    missing = sorted(fields - set(found.model_fields))
    assert not missing, f"Prefect contract: {model} no longer has the fields {missing}"


def test_a_crashed_state_can_still_be_built_and_accepted_statuses_named() -> None:
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Crashed

    assert Crashed(message="stopped").is_crashed()
    assert SetStateStatus.ACCEPT.value == "ACCEPT", "Prefect contract: SetStateStatus.ACCEPT changed"


def test_the_rest_shapes_the_zombie_sweep_relies_on() -> None:
    """orch/monitoring/zombies.py speaks Prefect's REST API with httpx (no Prefect import in orch/): the
    request and response fields it sends and reads, by name, and the heartbeat it judges runs by."""
    import prefect.flow_engine as engine
    from prefect.server.api import flow_runs, task_runs
    from prefect.server.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter
    from prefect.server.events.schemas.events import EventPage, ReceivedEvent
    from prefect.server.schemas.core import FlowRun, TaskRun
    from prefect.settings.models.flows import FlowsSettings

    from orch.monitoring import zombies

    for route in (flow_runs.set_flow_run_state, task_runs.set_task_run_state):
        assert {"state", "force"} <= set(_parameters(route)), f"Prefect contract: {route.__name__} changed"
    shapes = [(EventFilter, {"event", "resource", "occurred", "order"}), (EventResourceFilter, {"id"}),
              (EventOccurredFilter, {"since", "until"}), (EventPage, {"events"}), (ReceivedEvent, {"occurred"}),
              (FlowRun, {"id", "name", "labels", "infrastructure_pid", "start_time", "tags", "state_type"}),
              (TaskRun, {"id", "name", "state_type"})]
    for model, fields in shapes:
        missing = sorted(fields - set(model.model_fields))
        assert not missing, f"Prefect contract: {model.__name__} no longer has the fields {missing}"
    assert f'"{zombies.HEARTBEAT_EVENT}"' in inspect.getsource(engine), (
        f"Prefect contract: the flow engine no longer emits {zombies.HEARTBEAT_EVENT}")
    frequency = FlowsSettings.model_fields["heartbeat_frequency"]
    assert frequency.default == zombies.PREFECT_DEFAULT_HEARTBEAT, "Prefect contract: the heartbeat default changed"
    names = {str(choice).lower() for choice in frequency.validation_alias.choices}  # type: ignore[union-attr]
    assert {name.lower() for name in zombies.HEARTBEAT_ENV} <= names, (
        f"Prefect contract: the heartbeat frequency is no longer read from {zombies.HEARTBEAT_ENV}")


# What Prefect keeps per task run until its flow run ends, which the dispatcher drops once a task run is final
# (orch/dispatch/prefect_entries.py, issue 17): each a dict ORCH pops from or clears by name.
def test_the_thread_pool_task_runner_keeps_cancel_events_in_a_dict() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    found = getattr(ThreadPoolTaskRunner(max_workers=1), "_cancel_events", None)
    assert isinstance(found, dict), (
        f"Prefect contract: ThreadPoolTaskRunner._cancel_events is gone or no longer a dict ({type(found).__name__})")


@pytest.mark.parametrize("field", ["run_results", "task_run_assets"])
def test_the_flow_run_context_keeps_per_task_run_entries_in_a_dict(field: str) -> None:
    import typing

    from prefect.context import FlowRunContext

    assert field in FlowRunContext.model_fields, f"Prefect contract: FlowRunContext.{field} is gone"
    annotation = FlowRunContext.model_fields[field].annotation
    assert typing.get_origin(annotation) is dict, (
        f"Prefect contract: FlowRunContext.{field} is no longer a dict ({annotation})")
