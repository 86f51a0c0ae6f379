"""The console's pages: server-rendered HTML over the same data the JSON API serves.

Pages only read. Every change a page offers is a ``fetch`` of the JSON API from ``static/console.js``
(with the session cookie and its CSRF token), so permissions, validation and audit records are the
API's own; a page hides the controls its reader's role cannot use, and the API refuses them anyway.

Each page declares the permission of the data it shows (``page(Permission.X)``), as every API route does.
A browser without a valid session is sent to the login form (303) and back afterwards; an API client
(no ``text/html`` in ``Accept``) gets the API's 401 instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from orch.api.console import charts
from orch.api.console.session import (
    SESSION_COOKIE,
    CsrfRefused,
    check_origin,
    clear_session,
    csrf_token,
    login_url,
    safe_next,
    set_session,
    wants_html,
)
from orch.api.deps import CallerDep, Principal, SettingsDep, authorize, limit_by_address, oauth2_scheme, require
from orch.api.routes.auth import NO_STORE, log_in
from orch.api.schemas import TaskEventOut, TaskOut
from orch.config.schema import Settings
from orch.dispatch.errors import InvalidRequest, TaskNotFound
from orch.monitoring.messages import prefect_ui_url
from orch.security.rbac import Permission
from orch.storage.models import TASK_STATUSES

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE_HEADERS = {"Cache-Control": "no-store"}
TASK_PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 100
HEAL_PAGE_SIZE = 50

# (path, label, permission to see it): the navigation shows a reader only the pages their role may open.
NAV = [("/ui/", "Overview", Permission.SYSTEM_MONITOR), ("/ui/tasks", "Tasks", Permission.TASK_READ),
       ("/ui/cores", "Cores", Permission.SYSTEM_MONITOR), ("/ui/locks", "Locks", Permission.SYSTEM_MONITOR),
       ("/ui/alerts", "Alerts", Permission.SYSTEM_MONITOR), ("/ui/heals", "Heals", Permission.SYSTEM_MONITOR),
       ("/ui/backups", "Backups & supply chain", Permission.SYSTEM_MONITOR),
       ("/ui/audit", "Audit", Permission.SYSTEM_ADMIN), ("/ui/users", "Users", Permission.USER_READ)]


class LoginRedirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class PageRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def page(permission: Permission) -> Callable[..., object]:
    """``require(permission)`` for a page: a browser without a session is sent to log in, one whose role
    lacks the permission gets an HTML 403; an API client gets the API's JSON answers."""

    async def dependency(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        try:
            return await authorize(request, token, permission)
        except HTTPException as exc:
            if wants_html(request) and exc.status_code == 401:
                raise LoginRedirect(login_url(request)) from None
            if wants_html(request) and exc.status_code == 403:
                raise PageRefused(403, str(exc.detail)) from None
            raise

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route-permission test
    return dependency


Monitor = Annotated[Principal, Depends(page(Permission.SYSTEM_MONITOR))]
Reader = Annotated[Principal, Depends(page(Permission.TASK_READ))]


def render(request: Request, principal: Principal | None, template: str, current: str = "",
           status: int = 200, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    session = request.cookies.get(SESSION_COOKIE)
    return templates.TemplateResponse(request, template, {
        "principal": principal, "P": Permission, "current": current,
        "nav": [(path, label) for path, label, needed in NAV if principal and principal.may(needed)],
        "csrf": csrf_token(settings, session) if session else "",
        "prefect_ui": prefect_ui_url(settings), **context}, status_code=status, headers=PAGE_HEADERS)


def _guarded(fetch: Callable[[], Any]) -> dict[str, Any]:
    """One overview section: its data, or why it cannot be shown now. A console at 3 a.m. must show
    what it can while one part (Prefect, a backup directory) is down, not answer 500 for all of it."""
    try:
        return {"ok": True, "data": fetch()}
    except Exception as exc:  # noqa: BLE001 - shown on the page, section by section
        return {"ok": False, "error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


# ---- login and logout ---------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
    return render(request, None, "login.html", next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(limit_by_address)])
async def login(request: Request, settings: SettingsDep, caller: CallerDep,
                username: Annotated[str, Form(max_length=64)] = "",
                password: Annotated[str, Form(max_length=1024)] = "",
                next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """The login form: the API's own login (throttles, argon2, audit) and, on success, the same token in
    the session cookie. A login posted from another origin is refused (no logging a victim in as you)."""
    target = safe_next(next)
    try:
        check_origin(request)
    except CsrfRefused as exc:
        return render(request, None, "login.html", status=403, next=target, error=str(exc))
    if not username or not password:
        return render(request, None, "login.html", status=422, next=target, error="enter a username and a password")
    try:
        issued = await log_in(settings, caller, username, password)
    except HTTPException as exc:
        response = render(request, None, "login.html", status=exc.status_code, next=target, error=str(exc.detail))
        if exc.headers and "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    set_session(response, request, issued.access_token, issued.expires_in)
    return response


@router.post("/logout")
async def logout(request: Request,
                 principal: Annotated[Principal, Depends(require(Permission.TASK_READ))]) -> JSONResponse:
    """End the browser's session (CSRF-checked like every change). The token itself stays valid until it
    expires, as a bearer token does: changing the password or role is what revokes every token."""
    response = JSONResponse({"logged_out": principal.username}, headers=NO_STORE)
    clear_session(response, request)
    return response


# ---- overview -----------------------------------------------------------------------------------
def _cores_summary(settings: Settings) -> dict[str, Any]:
    from orch.dispatch.cores_view import cores_overview

    cores = cores_overview(settings)
    kinds = [(c.get("reservation") or {}).get("kind") for c in cores]
    return {"total": len(cores), "isolated": kinds.count("isolated"), "reserved": kinds.count("stay"),
            "busy": sum(1 for c, kind in zip(cores, kinds, strict=True) if c["running"] and kind != "isolated"),
            "idle": sum(1 for c, kind in zip(cores, kinds, strict=True) if not c["running"] and kind is None)}


def _live_figures(settings: Settings) -> dict[str, Any]:
    """What the overview refreshes live (at most once a second): queue, throughput, cores, alerts."""
    from orch.dispatch.stats import queue_figures, throughput
    from orch.monitoring.alerts import list_alerts

    flow = _guarded(lambda: throughput(settings))
    return {"queue": _guarded(lambda: queue_figures(settings)), "throughput": flow,
            "chart": charts.throughput_svg(flow["data"]) if flow["ok"] else None,
            "cores": _guarded(lambda: _cores_summary(settings)),
            "alerts": _guarded(lambda: list_alerts(settings, state="firing"))}


def _overview(settings: Settings) -> dict[str, Any]:
    from orch.backup.catalog_view import backups_overview
    from orch.monitoring.healing import list_runs
    from orch.supply_chain.status import supply_chain_overview

    return {**_live_figures(settings), "heal": _guarded(lambda: (list_runs(settings, None, 1) or [None])[0]),
            "backups": _guarded(lambda: backups_overview(settings)),
            "supply": _guarded(lambda: supply_chain_overview(settings))}


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, principal: Monitor) -> HTMLResponse:
    from orch.api.routes.health import detailed_health

    health = await detailed_health(request.app)
    data = await run_in_threadpool(_overview, request.app.state.settings)
    return render(request, principal, "overview.html", "/ui/", health=health, **data)


@router.get("/overview/live", response_class=HTMLResponse)
async def overview_live(request: Request, principal: Monitor) -> HTMLResponse:
    """The overview's live figures as a fragment, fetched by the page at most once a second."""
    data = await run_in_threadpool(_live_figures, request.app.state.settings)
    return render(request, principal, "_overview_live.html", "/ui/", **data)


# ---- tasks --------------------------------------------------------------------------------------
def _when(name: str, value: str | None, problems: list[str]) -> datetime | None:
    """A filter time from a ``datetime-local`` field (read as UTC) or an ISO time with its zone."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{name}: not a date and time ({value[:40]!r})")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _task_query(request: Request, principal: Principal) -> tuple[Any, dict[str, str], list[str]]:
    """The page's filter from its query string, the values to show back in the form, and its problems."""
    from orch.dispatch.task_filter import TaskFilter

    params = request.query_params
    shown = {name: params.get(name, "")[:64] for name in ("status", "core_id", "action", "owner", "since", "until")}
    problems: list[str] = []
    if shown["status"] and shown["status"] not in TASK_STATUSES:
        problems.append(f"status: must be one of {', '.join(TASK_STATUSES)}")
    core = shown["core_id"] or None
    if principal.core_id is not None:  # a core's own user reads only its own tasks, as in the API
        core = principal.core_id
    task_filter = TaskFilter(status=shown["status"] or None, core_id=core,
                             action=shown["action"] or None, owner=shown["owner"] or None,
                             since=_when("since", shown["since"], problems),
                             until=_when("until", shown["until"], problems))
    return task_filter, shown, problems


def _task_rows(settings: Settings, task_filter: Any, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    from orch.dispatch.queue import TaskQueue

    tasks, next_cursor = TaskQueue(settings).page(task_filter, TASK_PAGE_SIZE, cursor)
    return [TaskOut.model_validate(task).model_dump() for task in tasks], next_cursor


async def _tasks_context(request: Request, principal: Principal) -> tuple[dict[str, Any], int]:
    from orch.dispatch.actions import registry

    task_filter, shown, problems = _task_query(request, principal)
    cursor = request.query_params.get("cursor") or None
    tasks: list[dict[str, Any]] = []
    next_cursor = None
    if not problems:
        try:
            tasks, next_cursor = await run_in_threadpool(_task_rows, request.app.state.settings, task_filter,
                                                         cursor)
        except InvalidRequest as exc:
            problems = list(exc.errors)
    keep = {k: v for k, v in shown.items() if v}
    return {"tasks": tasks, "shown": shown, "problems": problems, "statuses": TASK_STATUSES,
            "first_page": cursor is None, "filter_query": keep,
            "next_query": {**keep, "cursor": next_cursor} if next_cursor else None,
            "actions": sorted(registry()), "priorities": ["low", "normal", "high", "critical"]}, \
        422 if problems else 200


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(request: Request, principal: Reader) -> HTMLResponse:
    context, status = await _tasks_context(request, principal)
    return render(request, principal, "tasks.html", "/ui/tasks", status, **context)


@router.get("/tasks/rows", response_class=HTMLResponse)
async def task_rows(request: Request, principal: Reader) -> HTMLResponse:
    """The rows of the tasks page for its filter: what the page fetches (at most once a second) when
    new tasks appear, instead of one request per event."""
    context, status = await _tasks_context(request, principal)
    return render(request, principal, "_task_rows.html", "/ui/tasks", status, **context)


def _attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task's attempts from its events: each ``task.started`` opens one; the next move ends it."""
    attempts: list[dict[str, Any]] = []
    for event in events:
        kind = event["event_type"].removeprefix("task.")
        if kind == "started":
            attempts.append({"attempt": event["data"].get("attempt", len(attempts) + 1),
                             "dispatcher": event["data"].get("dispatcher"), "started_at": event["timestamp"],
                             "task_run_id": event["data"].get("task_run_id"), "ended_at": None,
                             "outcome": "running", "detail": None})
        elif attempts and attempts[-1]["ended_at"] is None and kind != "created":
            data = event["data"]
            attempts[-1].update(ended_at=event["timestamp"], outcome=kind,
                                detail=data.get("error") or data.get("reason"))
    return attempts


def _prefect_runs(task: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, str | None]:
    """The Prefect runs a task names (a ``task_run_id`` in its events, a ``flow_run_id`` in its result)."""
    found: dict[str, str | None] = {"task_run_id": None, "flow_run_id": None}
    for data in [e["data"] for e in events] + [task.get("result")]:
        if isinstance(data, dict):
            for key in found:
                if isinstance(data.get(key), str):
                    found[key] = data[key]
    return found


def _task_detail(settings: Settings, principal: Principal, task_id: str) -> dict[str, Any]:
    from orch.api.routes.tasks import visible_task
    from orch.dispatch.queue import TaskQueue

    task = TaskOut.model_validate(visible_task(settings, principal, task_id)).model_dump()
    events = [TaskEventOut.model_validate(e).model_dump() for e in TaskQueue(settings).events(task_id)]
    return {"task": task, "events": events, "attempts": _attempts(events), "runs": _prefect_runs(task, events),
            "result_json": _json(task["result"]) if task["result"] is not None else None,
            "params_json": _json(task["params"]), "metadata_json": _json(task["metadata"])}


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(task_id: str, request: Request, principal: Reader) -> HTMLResponse:
    try:
        data = await run_in_threadpool(_task_detail, request.app.state.settings, principal, task_id[:64])
    except TaskNotFound as exc:
        raise PageRefused(404, str(exc)) from None
    return render(request, principal, "task.html", "/ui/tasks", **data)


# ---- cores, locks -------------------------------------------------------------------------------
@router.get("/cores", response_class=HTMLResponse)
async def cores_page(request: Request, principal: Monitor) -> HTMLResponse:
    from orch.dispatch.cores_view import cores_overview

    cores = await run_in_threadpool(cores_overview, request.app.state.settings)
    return render(request, principal, "cores.html", "/ui/cores", cores=cores)


@router.get("/locks", response_class=HTMLResponse)
async def locks_page(request: Request, principal: Monitor) -> HTMLResponse:
    from orch.dispatch.locks import LockManager

    locks = await run_in_threadpool(LockManager(request.app.state.settings).list)
    return render(request, principal, "locks.html", "/ui/locks", locks=locks)


# ---- alerts, silences, heals --------------------------------------------------------------------
ACTIVE_ALERTS = ("firing", "flapping", "pending")


def _alerts(settings: Settings) -> dict[str, Any]:
    from orch.monitoring import alerts, silences

    listed = [a for a in alerts.list_alerts(settings) if a["state"] in ACTIVE_ALERTS]
    listed.sort(key=lambda a: ACTIVE_ALERTS.index(a["state"]))
    every = silences.list_silences(settings)
    return {"alerts": listed, "silences": [s for s in every if s["kind"] == "silence"],
            "windows": [s for s in every if s["kind"] == "maintenance"]}


@router.get("/alerts", response_class=HTMLResponse)
async def alerts_page(request: Request, principal: Monitor) -> HTMLResponse:
    data = await run_in_threadpool(_alerts, request.app.state.settings)
    return render(request, principal, "alerts.html", "/ui/alerts", **data)


@router.get("/heals", response_class=HTMLResponse)
async def heals_page(request: Request, principal: Monitor) -> HTMLResponse:
    from orch.monitoring.healing import list_runs

    runs = await run_in_threadpool(list_runs, request.app.state.settings, None, HEAL_PAGE_SIZE)
    return render(request, principal, "heals.html", "/ui/heals", runs=runs)


@router.get("/heals/runs", response_class=HTMLResponse)
async def heal_runs(request: Request, principal: Monitor) -> HTMLResponse:
    """The heal timeline as a fragment: what the heals page fetches (every 2 s at most) while a run on it
    is still running or waiting for approval. Heal runs send no SSE events, and a run's approval state
    lives in Prefect, so the page asks the server rather than following a stream."""
    from orch.monitoring.healing import list_runs

    runs = await run_in_threadpool(list_runs, request.app.state.settings, None, HEAL_PAGE_SIZE)
    return render(request, principal, "_heal_runs.html", "/ui/heals", runs=runs)


# ---- backups and supply chain -------------------------------------------------------------------
def _backups(settings: Settings) -> dict[str, Any]:
    from orch.backup.catalog_view import backups_overview
    from orch.supply_chain.status import supply_chain_overview

    return {"catalog": _guarded(lambda: backups_overview(settings)),
            "supply": _guarded(lambda: supply_chain_overview(settings))}


@router.get("/backups", response_class=HTMLResponse)
async def backups_page(request: Request, principal: Monitor) -> HTMLResponse:
    data = await run_in_threadpool(_backups, request.app.state.settings)
    return render(request, principal, "backups.html", "/ui/backups", **data)


# ---- audit and users (admin) --------------------------------------------------------------------
@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, principal: Annotated[Principal, Depends(page(Permission.SYSTEM_ADMIN))],
                     username: Annotated[str, Query(max_length=64)] = "",
                     action: Annotated[str, Query(max_length=64)] = "",
                     resource: Annotated[str, Query(max_length=64)] = "",
                     outcome: Annotated[str, Query(pattern=r"^(|success|failure)$")] = "",
                     since: Annotated[str, Query(max_length=40)] = "",
                     until: Annotated[str, Query(max_length=40)] = "",
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> HTMLResponse:
    from orch.api.routes.users import _audit

    problems: list[str] = []
    start, end = _when("since", since, problems), _when("until", until, problems)
    shown = {"username": username, "action": action, "resource": resource, "outcome": outcome, "since": since,
             "until": until}
    entries: list[Any] = []
    if not problems:
        found = await run_in_threadpool(_audit, request.app.state.settings, username or None, action or None,
                                        resource or None, None if not outcome else outcome == "success", start,
                                        end, AUDIT_PAGE_SIZE, offset)
        entries = [entry.model_dump() for entry in found.entries]
    keep = {k: v for k, v in shown.items() if v}
    return render(request, principal, "audit.html", "/ui/audit", 422 if problems else 200, entries=entries,
                  shown=shown, problems=problems, offset=offset,
                  older={**keep, "offset": offset + AUDIT_PAGE_SIZE} if len(entries) == AUDIT_PAGE_SIZE else None,
                  newer={**keep, "offset": max(0, offset - AUDIT_PAGE_SIZE)} if offset else None)


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, principal: Annotated[Principal, Depends(page(Permission.USER_READ))]
                     ) -> HTMLResponse:
    from orch.api.routes.users import _list
    from orch.security.rbac import ROLE_PERMISSIONS

    users = await run_in_threadpool(_list, request.app.state.settings)
    return render(request, principal, "users.html", "/ui/users", users=[u.model_dump() for u in users.users],
                  roles=sorted(ROLE_PERMISSIONS))


# ---- assembly -----------------------------------------------------------------------------------
def install(app: FastAPI) -> None:
    """Add the console to ``app``: its pages, its static files and the answers for pages a browser
    may not see (login first, or an HTML refusal)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(LoginRedirect)
    async def to_login(request: Request, exc: LoginRedirect) -> Response:
        return RedirectResponse(exc.location, status_code=303, headers=PAGE_HEADERS)

    @app.exception_handler(PageRefused)
    async def refused(request: Request, exc: PageRefused) -> Response:
        return render(request, None, "refused.html", status=exc.status, message=exc.message)
