"""What a task can do: each action has a params model (checked before anything is queued) and a runner
(called by the dispatch flow inside a Prefect task).

Built in: ``noop``, ``sleep``, ``shell`` (an argv list, never through a shell, allow-listed executables
only), ``http`` (allow-listed hosts only), ``run-deployment`` (a Prefect deployment, waited for) and
``external`` (an outside core does the work and reports back through the API). More come from the
entry-point group ``orch_next.actions``: each entry point names an :class:`ActionSpec`.

An action whose effect needs more than ``task:create`` says so with ``needs`` (``run-deployment``: the
permission of the flow it starts, from :mod:`orch.security.flow_access`); the task's owner must hold it
when the task is dispatched and again when it runs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from orch.config.schema import DispatchSettings
from orch.errors import OrchError
from orch.security.flow_access import Requirement, to_start

ENTRY_POINT_GROUP = "orch_next.actions"


class ActionFailed(OrchError):
    """The action ran and did not succeed; the message is what the task's ``error`` will say."""

    status_code = 502  # the action's own failure (a command, a host, a run), not the caller's mistake


@dataclass(frozen=True)
class ActionContext:
    task_id: str
    core_id: str
    attempt: int
    timeout: float
    dispatch: DispatchSettings


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _needs_nothing(params: Any) -> Requirement | None:
    return None


@dataclass(frozen=True)
class ActionSpec:
    """An action: its params model, a check against configuration, how to run it (None: external), and
    what its owner must be allowed beyond ``task:create`` for the effect these params have (None: nothing)."""

    name: str
    params: type[BaseModel]
    run: Callable[[Any, ActionContext], Any] | None
    check: Callable[[Any, DispatchSettings], list[str]] = field(default=lambda params, dispatch: [])
    needs: Callable[[Any], Requirement | None] = _needs_nothing


class NoParams(Params):
    """``noop`` takes no params; any given are an error."""


class SleepParams(Params):
    seconds: float = Field(ge=0, le=86400)


class ShellParams(Params):
    argv: list[str] = Field(min_length=1, description="Executable and arguments; never run through a shell.")
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Added to a minimal environment.")


class HttpParams(Params):
    url: str = Field(pattern=r"^https?://", max_length=2048)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    expected_status: list[int] = Field(default_factory=lambda: list(range(200, 300)))


class RunDeploymentParams(Params):
    name: str = Field(pattern=r"^[^/]+/[^/]+$", description="flow-name/deployment-name")
    parameters: dict[str, Any] = Field(default_factory=dict)


def _needs_to_start(params: RunDeploymentParams) -> Requirement:
    """Starting a flow needs what the flow's own route needs (admin for restore, recovery, self-heal,
    maintenance and for any deployment that is not ORCH's)."""
    return to_start(params.name)


class ExternalParams(BaseModel):
    model_config = ConfigDict(extra="allow")  # whatever the outside core understands


def _run_noop(params: NoParams, ctx: ActionContext) -> dict[str, Any]:
    return {"ok": True}


def _run_sleep(params: SleepParams, ctx: ActionContext) -> dict[str, Any]:
    # Short slices: Prefect's timeout interrupts a worker thread between Python bytecodes, not
    # inside one long time.sleep(), so a timed-out sleep must wake up to notice.
    deadline = time.monotonic() + params.seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
    return {"slept": params.seconds}


def _check_shell(params: ShellParams, dispatch: DispatchSettings) -> list[str]:
    if params.argv[0] not in dispatch.shell_allowlist:
        allowed = ", ".join(dispatch.shell_allowlist) or "nothing (dispatch.shell_allowlist is empty)"
        return [f"params.argv.0: {params.argv[0]!r} is not allow-listed; allowed: {allowed}"]
    return []


def _cap(data: bytes, limit: int) -> tuple[str, bool]:
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


def _run_shell(params: ShellParams, ctx: ActionContext) -> dict[str, Any]:
    problems = _check_shell(params, ctx.dispatch)  # configuration may have changed since it was queued
    if problems:
        raise ActionFailed(problems[0])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **params.env}
    try:
        done = subprocess.run(params.argv, cwd=params.cwd, env=env, capture_output=True,
                              timeout=ctx.timeout, shell=False, check=False)
    except FileNotFoundError:
        raise ActionFailed(f"executable not found: {params.argv[0]}") from None
    limit = ctx.dispatch.max_output_bytes
    stdout, out_cut = _cap(done.stdout, limit)
    stderr, err_cut = _cap(done.stderr, limit)
    result = {"exit_code": done.returncode, "stdout": stdout, "stderr": stderr,
              "truncated": out_cut or err_cut}
    if done.returncode != 0:
        last = (stderr.strip().splitlines() or [""])[-1][:200]
        raise ActionFailed(f"exit code {done.returncode}" + (f": {last}" if last else ""))
    return result


def _check_http(params: HttpParams, dispatch: DispatchSettings) -> list[str]:
    host = urlsplit(params.url).hostname or ""
    if host not in dispatch.http_allowlist:
        allowed = ", ".join(dispatch.http_allowlist) or "nothing (dispatch.http_allowlist is empty)"
        return [f"params.url: host {host!r} is not allow-listed; allowed: {allowed}"]
    return []


def _run_http(params: HttpParams, ctx: ActionContext) -> dict[str, Any]:
    problems = _check_http(params, ctx.dispatch)
    if problems:
        raise ActionFailed(problems[0])
    import httpx

    from orch.http import http_client

    started = time.perf_counter()
    try:
        with http_client(ctx.timeout, follow_redirects=False) as client:
            response = client.request(params.method, params.url, headers=params.headers,
                                      json=params.json_body)
    except httpx.HTTPError as exc:
        raise ActionFailed(f"{type(exc).__name__}: {exc}") from None
    body, truncated = _cap(response.content, ctx.dispatch.max_output_bytes)
    result = {"status": response.status_code, "body": body, "truncated": truncated,
              "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)}
    if response.status_code not in params.expected_status:
        raise ActionFailed(f"HTTP {response.status_code} from {params.url}")
    return result


def _run_deployment(params: RunDeploymentParams, ctx: ActionContext) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(params.name, parameters=params.parameters, timeout=ctx.timeout,
                              tags=["orch", f"orch-task:{ctx.task_id}"])
    state = flow_run.state
    result = {"flow_run_id": str(flow_run.id), "state": state.type.value if state else None}
    if state is None or not state.is_completed():
        raise ActionFailed(f"deployment {params.name} run {flow_run.id} ended "
                           f"{state.type.value if state else 'without a state'}")
    return result


BUILTIN: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("noop", NoParams, _run_noop),
    ActionSpec("sleep", SleepParams, _run_sleep),
    ActionSpec("shell", ShellParams, _run_shell, _check_shell),
    ActionSpec("http", HttpParams, _run_http, _check_http),
    ActionSpec("run-deployment", RunDeploymentParams, _run_deployment, needs=_needs_to_start),
    ActionSpec("external", ExternalParams, None),
)}
_registry: dict[str, ActionSpec] | None = None
_registry_lock = threading.Lock()


def registry() -> dict[str, ActionSpec]:
    """Built-in actions plus plugins, loaded once; a plugin may not replace a built-in.

    Loaded under a lock: scanning every installed distribution's entry points takes tens of
    milliseconds, and the first burst of dispatches after a start once ran that scan in every
    request thread at the same time (measured, 300-450 ms for each of 32 concurrent first requests).
    """
    global _registry
    if _registry is not None:
        return _registry
    with _registry_lock:
        if _registry is not None:
            return _registry
        found = dict(BUILTIN)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            spec = entry.load()
            if not isinstance(spec, ActionSpec):
                raise TypeError(f"entry point {entry.name} in {ENTRY_POINT_GROUP} is not an ActionSpec")
            if spec.name in BUILTIN:
                raise ValueError(f"plugin action {spec.name!r} would replace a built-in action")
            found[spec.name] = spec
        _registry = found
    return _registry
