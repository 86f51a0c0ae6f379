"""The console in a real browser: Debian's Chromium driven by Playwright against the real app under uvicorn,
a real dispatcher process and the session's Prefect server. Never downloads a browser.

Screenshots of every page go to ``.ci/out/console/`` (CI keeps ``.ci/out`` as artefacts)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from api_fixtures import PASSWORD, Api, api_for, serve_app
from test_api_heal_approval import heal_audit, healing, waiting_run
from workers import dispatcher_service

from orch.config.schema import Settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parents[1] / ".ci" / "out" / "console"
PAGES = {"overview": "/ui/", "tasks": "/ui/tasks", "cores": "/ui/cores", "locks": "/ui/locks",
         "alerts": "/ui/alerts", "heals": "/ui/heals", "backups": "/ui/backups", "audit": "/ui/audit",
         "users": "/ui/users"}
UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.outerHTML)"""
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


class Watched:
    """A page whose requests, console errors and uncaught exceptions are recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.refused: list[str] = []  # requests the page's policy stopped before they left
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: "csp" in (request.failure or "").lower()
                and self.refused.append(request.url))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("dialog", lambda dialog: dialog.accept())
        page.set_default_timeout(TIMEOUT_MS)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def foreign_requests(self) -> list[str]:
        own = urlsplit(self.base).netloc
        return [url for url in self.requests if not url.startswith("data:") and url not in self.refused
                and urlsplit(url.removeprefix("blob:")).netloc != own]

    def log_in(self, username: str) -> None:
        self.goto("/ui/login")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(f"{self.base}/ui/**")


@pytest.fixture
def served(prefect_server: str, api_factory: Callable[..., Api], isolated_env: Path) -> Iterator[tuple[Api, str]]:
    api = api_factory(f"sqlite:///{isolated_env / 'data' / 'orch.db'}")
    with serve_app(api.settings) as (base, _app):
        yield api, base


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[[str], Watched]]:
    """A watched page on the app at the given URL, in a browser context of its own (its own cookies)."""
    contexts: list[Any] = []

    def make(base: str) -> Watched:
        context = chromium.new_context()
        contexts.append(context)
        return Watched(context.new_page(), base)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def open_page(new_page: Callable[[str], Watched], served: tuple[Api, str]) -> Callable[[], Watched]:
    return lambda: new_page(served[1])


@pytest.fixture
def heal_served(approval_settings: Callable[..., Settings]) -> Iterator[tuple[Api, str]]:
    """The real app under uvicorn on :func:`approval_settings` (a target ``web`` whose ``isolate`` needs
    approval)."""
    settings = approval_settings()
    with api_for(settings) as api, serve_app(settings) as (base, _app):
        yield api, base


def dispatcher(api: Api, log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """The real dispatcher service on the test's database, running tasks as Prefect task runs."""
    return dispatcher_service(log, {"DATABASE_URL": str(api.settings.database.url), "ORCH_HOME": str(log.parent)})


def test_keyboard_login_and_every_page_labelled_local_and_quiet(open_page: Callable[[], Watched],
                                                                served: tuple[Api, str]) -> None:
    from playwright.sync_api import expect

    api, _base = served
    _failed_tasks(api, 2)  # something on the pages (and in the screenshots)
    api.client.post("/dispatch", json={"core_id": "core-b", "action": "noop", "priority": "high"},
                    headers=api.headers("operator"))
    watched = open_page()
    page = watched.page
    watched.goto("/ui/tasks")
    expect(page).to_have_url(f"{watched.base}/ui/login?next=%2Fui%2Ftasks")
    expect(page.get_by_label("Username")).to_be_focused()  # autofocus: the keyboard starts in the form
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{watched.base}/ui/tasks")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()  # the first stop: skip to the content

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        watched.goto(path)
        expect(page.locator(f'nav a[aria-current="page"][href="{path}"]')).to_have_count(1)
        assert page.evaluate(UNLABELLED) == [], name
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    for path in ("/docs", "/redoc"):
        watched.goto(path)
        page.wait_for_load_state("networkidle")
    assert watched.foreign_requests() == []
    # ReDoc's footer always asks for its logo from cdn.redoc.ly; the policy refuses it (no request is made)
    assert [e for e in watched.errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == []


def test_dispatch_from_the_form_completes_live_and_field_errors_show_by_field(
        open_page: Callable[[], Watched], served: tuple[Api, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    api, _base = served
    watched = open_page()
    page = watched.page
    watched.log_in("oscar")
    watched.goto("/ui/tasks")
    page.evaluate("() => { window.notReloaded = true; }")
    page.get_by_text("Dispatch a task").click()
    page.locator("#d-core").fill("bad core")
    page.get_by_role("button", name="Dispatch").click()
    error = page.locator('form.dispatch [data-error-for="core_id"]')
    expect(error).to_contain_text("should match pattern")
    expect(page.locator("#d-core")).to_have_attribute("aria-invalid", "true")

    with dispatcher(api, tmp_path / "dispatcher.log"):
        page.locator("#d-core").fill("core-a")
        page.get_by_role("button", name="Dispatch").click()
        expect(page.locator("#toast")).to_contain_text("queued on core-a")
        task_id = page.locator("#toast").inner_text().split()[1]
        status = page.locator(f'tr[data-task-id="{task_id}"] .status')
        expect(status).to_have_text("completed", timeout=120_000)
    assert page.evaluate("() => window.notReloaded") is True  # the row came and moved without a reload
    assert watched.foreign_requests() == []
    unexpected = [e for e in watched.errors if "status of 422" not in e]  # the refused dispatch above
    assert unexpected == []


def _failed_tasks(api: Api, count: int) -> list[str]:
    """Tasks that really failed: external tasks a core claims and reports failed through the API."""
    operator, core = api.headers("operator"), api.headers("system")
    ids = [api.client.post("/dispatch", json={"core_id": "core-a", "action": "external", "max_retries": 0},
                           headers=operator).json()["task_id"] for _ in range(count)]
    for _ in ids:  # one at a time: the core runs one task at once
        claimed = api.client.post("/cores/core-a/claim", json={"limit": 1}, headers=core).json()["tasks"]
        assert len(claimed) == 1 and claimed[0]["task_id"] in ids
        task_id = claimed[0]["task_id"]
        for report in ({"status": "running"}, {"status": "failed", "error": "boom"}):
            answer = api.client.put(f"/jobs/{task_id}/status", json={**report, "attempt": 1}, headers=core)
            assert answer.status_code == 200, answer.text
    return ids


def test_bulk_retry_of_failed_tasks(open_page: Callable[[], Watched], served: tuple[Api, str]) -> None:
    from playwright.sync_api import expect

    api, _base = served
    ids = _failed_tasks(api, 3)
    watched = open_page()
    page = watched.page
    watched.log_in("oscar")
    watched.goto("/ui/tasks?status=failed")
    expect(page.locator("#task-rows tr[data-task-id]")).to_have_count(3)
    page.get_by_label("Select every task on this page").check()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.locator("#toast")).to_contain_text("retry: 3 changed")
    expect(page.locator("#task-rows tr.empty")).to_have_count(1)  # none failed any more
    assert {api.client.get(f"/tasks/{i}", headers=api.headers("viewer")).json()["status"] for i in ids} == {"queued"}
    entries = api.client.get("/audit", params={"action": "task.retry"}, headers=api.headers("admin")).json()["entries"]
    assert entries and {e["username"] for e in entries} == {"oscar"}
    assert watched.foreign_requests() == [] and watched.errors == []


def test_a_viewer_sees_no_controls(open_page: Callable[[], Watched]) -> None:
    watched = open_page()
    page = watched.page
    watched.log_in("vera")
    for name, path in PAGES.items():
        if name in ("audit", "users"):
            continue
        watched.goto(path)
        assert page.locator("button[data-api]:not([data-api='POST /ui/logout'])").count() == 0, name
        assert page.locator("form.api-form, button[data-bulk]").count() == 0, name
    watched.goto("/ui/users")
    assert "lacks permission" in page.content()
    assert watched.foreign_requests() == []
    assert [e for e in watched.errors if "status of 403" not in e] == []  # the refused admin page


def test_an_admin_approves_a_paused_heal_and_sees_the_target_healed(heal_served: tuple[Api, str],
                                                                   new_page: Callable[[str], Watched]) -> None:
    """A real self-heal run on the session's Prefect server pauses for approval; an operator and a viewer see
    it waiting with no way to answer; the admin approves it on the heals page with a comment and, without a
    reload, sees the run end healed (the page follows a run until it is over)."""
    from playwright.sync_api import expect

    from orch.monitoring.target_checks import check_health
    from orch.monitoring.targets import find_target

    api, base = heal_served
    target = find_target(api.settings, "web")
    assert check_health(api.settings, target).healthy is False
    with healing() as outcome:
        run = waiting_run(api)
        entry = f'li[data-heal-run="{run["id"]}"]'
        for username in ("oscar", "vera"):
            watched = new_page(base)
            watched.log_in(username)
            watched.goto("/ui/heals")
            expect(watched.page.locator(f"{entry} .heal-outcome")).to_have_text("awaiting approval")
            assert watched.page.locator(f"{entry} form, {entry} button").count() == 0, username
            assert watched.foreign_requests() == [] and watched.errors == []

        watched = new_page(base)
        page = watched.page
        watched.log_in("alice")
        watched.goto("/ui/heals")
        page.evaluate("() => { window.notReloaded = true; }")
        shown = page.locator(entry)
        expect(shown.locator(".heal-outcome")).to_have_text("awaiting approval")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "heals-awaiting-approval.png"), full_page=True)
        shown.get_by_label("Comment").fill("isolating it, INC-7")
        shown.get_by_role("button", name="Approve").click()
        expect(page.locator("#toast")).to_contain_text(f"Answer sent for heal run {run['id']}")
        expect(shown.locator(".heal-outcome")).to_have_text("healed", timeout=120_000)
        expect(shown.get_by_role("button")).to_have_count(0)
        page.screenshot(path=str(SCREENSHOTS / "heals-healed.png"), full_page=True)

    assert page.evaluate("() => window.notReloaded") is True
    assert outcome["outcome"] == "healed" and outcome["action"] == "isolate"
    assert check_health(api.settings, target).healthy is True
    ((action, actor, details),) = heal_audit(api)
    assert (action, actor, details["comment"]) == ("heal.approve", "alice", "isolating it, INC-7")
    assert watched.foreign_requests() == [] and watched.errors == []
