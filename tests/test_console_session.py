"""The console's session: the API's login and token in an HttpOnly SameSite cookie, CSRF on every change a
cookie authenticates, the same RBAC and audit as the API, pages per role, and local-only HTML."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from api_fixtures import PASSWORD, ROLE_USERS, Api, serve_app
from fastapi.testclient import TestClient

from orch.api.console.session import CSRF_HEADER, SESSION_COOKIE

HTML = {"Accept": "text/html"}
PAGES = ["/ui/", "/ui/tasks", "/ui/cores", "/ui/locks", "/ui/alerts", "/ui/heals", "/ui/backups", "/ui/audit",
         "/ui/users"]
EXTERNAL = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+", re.IGNORECASE)


def browser(api: Api) -> TestClient:
    """A second client on the same app with its own cookie jar (a browser of its own)."""
    return TestClient(api.client.app, base_url="http://127.0.0.1")


def log_in(client: TestClient, username: str, next_path: str = "") -> Any:
    return client.post("/ui/login", data={"username": username, "password": PASSWORD, "next": next_path},
                       follow_redirects=False)


def csrf_of(client: TestClient) -> str:
    page = client.get("/ui/tasks", headers=HTML)
    assert page.status_code == 200, page.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)[1]  # type: ignore[index]


def session_for(api: Api, role: str) -> tuple[TestClient, str]:
    client = browser(api)
    assert log_in(client, ROLE_USERS[role]).status_code == 303
    return client, csrf_of(client)


def test_login_form_sets_the_apis_token_in_a_strict_httponly_cookie(api: Api) -> None:
    client = browser(api)
    form = client.get("/ui/login", headers=HTML)
    assert form.status_code == 200 and 'name="password"' in form.text
    response = log_in(client, "oscar", "/ui/tasks?status=failed")
    assert response.status_code == 303 and response.headers["location"] == "/ui/tasks?status=failed"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # plain http here; https adds Secure
    assert response.headers["cache-control"] == "no-store"
    token = client.cookies[SESSION_COOKIE]
    assert api.client.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200  # the API's token
    audited = api.client.get("/audit", params={"action": "authenticate", "username": "oscar"},
                             headers=api.headers("admin")).json()["entries"]
    assert audited[0]["success"] is True  # the API's own login path, audited as such

    wrong = client.post("/ui/login", data={"username": "oscar", "password": "wrong"}, follow_redirects=False)
    assert wrong.status_code == 401 and "incorrect username or password" in wrong.text


def test_https_login_marks_the_cookie_secure(api: Api) -> None:
    secure = TestClient(api.client.app, base_url="https://127.0.0.1")
    response = log_in(secure, "vera")
    assert response.status_code == 303 and "Secure" in response.headers["set-cookie"]


def test_cookie_changes_need_the_sessions_csrf_token_and_are_audited_like_the_api(api: Api) -> None:
    client, csrf = session_for(api, "operator")
    body = {"core_id": "core-a", "action": "noop"}
    refused = client.post("/dispatch", json=body)
    assert refused.status_code == 403 and refused.json()["detail"] == "CSRF token missing or wrong"
    assert client.post("/dispatch", json=body, headers={CSRF_HEADER: "0" * 64}).status_code == 403
    other, other_csrf = session_for(api, "operator")  # the same user, another session
    assert other_csrf != csrf
    assert client.post("/dispatch", json=body, headers={CSRF_HEADER: other_csrf}).status_code == 403
    foreign = client.post("/dispatch", json=body, headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]

    accepted = client.post("/dispatch", json=body, headers={CSRF_HEADER: csrf, "Origin": "http://127.0.0.1"})
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    entries = api.client.get("/audit", params={"action": "task.create"}, headers=api.headers("admin")).json()["entries"]
    assert [(e["username"], e["resource_id"]) for e in entries] == [("oscar", task_id)]
    assert client.get(f"/tasks/{task_id}").status_code == 200  # reads need no CSRF token

    assert client.post("/ui/logout").status_code == 403  # logging out is a change too
    out = client.post("/ui/logout", headers={CSRF_HEADER: csrf})
    assert out.status_code == 200 and SESSION_COOKIE not in client.cookies
    assert client.get("/ui/tasks", headers=HTML, follow_redirects=False).status_code == 303


def test_bearer_clients_need_no_csrf_token(api: Api) -> None:
    response = api.client.post("/dispatch", json={"core_id": "core-a", "action": "noop"},
                               headers={**api.headers("operator"), "Origin": "https://elsewhere.example"})
    assert response.status_code == 202, response.text


def test_sse_accepts_the_session_cookie(api: Api) -> None:
    client = browser(api)
    log_in(client, "vera")
    token = client.cookies[SESSION_COOKIE]
    with serve_app(api.settings) as (base, _), \
            httpx.Client(base_url=base, timeout=30, cookies={SESSION_COOKIE: token}) as http, \
            http.stream("GET", "/sse/events") as stream:
        assert stream.status_code == 200
        assert next(stream.iter_text()).startswith("retry:")


def test_pages_without_a_session_send_a_browser_to_log_in_and_never_elsewhere(api: Api) -> None:
    client = browser(api)
    page = client.get("/ui/tasks?status=failed", headers=HTML, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%3Fstatus%3Dfailed"
    assert client.get("/ui/tasks").status_code == 401  # an API client gets the API's answer
    for evil in ("https://evil.example/", "//evil.example/ui/", "/\\evil.example", "/docs", "javascript:alert(1)"):
        assert log_in(client, "vera", evil).headers["location"] == "/ui/", evil
        form = client.get("/ui/login", params={"next": evil}, headers=HTML)
        assert "evil" not in form.text and "javascript" not in form.text


def test_a_viewer_sees_no_controls_and_the_api_refuses_them_anyway(api: Api) -> None:
    task_id = api.client.post("/dispatch", json={"core_id": "core-a", "action": "noop"},
                              headers=api.headers("operator")).json()["task_id"]
    client, csrf = session_for(api, "viewer")
    for path in ["/ui/", "/ui/tasks", f"/ui/tasks/{task_id}", "/ui/cores", "/ui/locks", "/ui/alerts", "/ui/heals",
                 "/ui/backups"]:
        page = client.get(path, headers=HTML)
        assert page.status_code == 200, (path, page.text[:500])
        controls = re.findall(r'data-api="(?!POST /ui/logout)[^"]*"|data-bulk=|class="api-form', page.text)
        assert controls == [], (path, controls)
        assert 'aria-current="page"' in page.text
    refused = client.post(f"/tasks/{task_id}/cancel", headers={CSRF_HEADER: csrf})
    assert refused.status_code == 403 and "lacks permission" in refused.json()["detail"]
    for path in ("/ui/audit", "/ui/users"):
        page = client.get(path, headers=HTML)
        assert page.status_code == 403 and "lacks permission" in page.text
    operator, _ = session_for(api, "operator")
    tasks = operator.get("/ui/tasks", headers=HTML).text
    assert 'data-bulk="retry"' in tasks and 'data-path="/dispatch"' in tasks


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_the_admin_under_a_local_only_policy(api: Api, path: str) -> None:
    client, _ = session_for(api, "admin")
    page = client.get(path, headers=HTML)
    assert page.status_code == 200, page.text[:500]
    policy = page.headers["content-security-policy"]
    assert "http" not in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert EXTERNAL.findall(page.text) == []
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    labelled = set(re.findall(r'<label for="([^"]+)"', page.text))
    for control in re.findall(r"<(?:input|select|textarea)\b[^>]*>", page.text):
        if 'type="hidden"' in control:
            continue
        named = re.search(r'id="([^"]+)"', control)
        assert "aria-label=" in control or (named and named[1] in labelled), (path, control)


def test_task_detail_masks_as_the_api_and_filters_refuse_bad_input(api: Api) -> None:
    accepted = api.client.post("/dispatch", json={"core_id": "core-a", "action": "external",
                                                  "params": {"password": "hunter2-is-secret"}},
                               headers=api.headers("operator"))
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    client, _ = session_for(api, "operator")
    detail = client.get(f"/ui/tasks/{task_id}", headers=HTML)
    assert detail.status_code == 200 and "hunter2-is-secret" not in detail.text and "task.created" in detail.text
    assert client.get("/ui/tasks/no-such-task", headers=HTML).status_code == 404
    bad = client.get("/ui/tasks", params={"status": "exploded", "since": "yesterday"}, headers=HTML)
    assert bad.status_code == 422 and "status: must be one of" in bad.text and "since: not a date" in bad.text
    assert client.get("/ui/tasks", params={"cursor": "garbage"}, headers=HTML).status_code == 422
    listed = client.get("/ui/tasks", params={"core_id": "core-a", "since": "2000-01-01T00:00"}, headers=HTML)
    assert listed.status_code == 200 and f'data-task-id="{task_id}"' in listed.text


def test_tasks_made_together_are_told_apart_in_the_task_list(api: Api) -> None:
    """Task ids are UUIDv7: their first characters are the time they were made, the same for a batch. The
    list labels each task by the last group of its id (random), and the whole id is the link's title."""
    batch = api.client.post("/dispatch/batch", json={"tasks": [{"core_id": "core-a", "action": "external"}] * 5},
                            headers=api.headers("operator"))
    assert batch.status_code == 202, batch.text
    ids = [task["task_id"] for task in batch.json()["tasks"]]
    client, _ = session_for(api, "operator")
    page = client.get("/ui/tasks", params={"core_id": "core-a"}, headers=HTML).text
    labels = re.findall(r'class="mono" title="([^"]+)">([^<]+)</a>', page)
    assert sorted(task_id for task_id, _ in labels) == sorted(ids)
    assert len({label for _, label in labels}) == len(ids)
    assert all(task_id.endswith(label) for task_id, label in labels)


def test_docs_and_redoc_are_served_from_local_files(api: Api) -> None:
    for path in ("/docs", "/redoc"):
        page = api.client.get(path)
        assert page.status_code == 200
        assert "http" not in page.text, re.findall(r".{40}http.{40}", page.text)
        policy = page.headers["content-security-policy"]
        script_src = re.search(r"script-src ([^;]*)", policy)[1]  # type: ignore[index]
        assert "http" not in policy and "unsafe-inline" not in script_src
        assert ("'unsafe-inline'" in policy) is (path == "/redoc")  # ReDoc's run-time styles only
        for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
            assert api.client.get(asset).status_code == 200, asset
    assert "swagger-ui-bundle.js" in api.client.get("/docs").text
    assert "redoc.standalone.js" in api.client.get("/redoc").text
    assert api.client.get("/docs/oauth2-redirect").status_code == 200


def test_overview_counts_what_finished_in_the_last_hour(api_factory: Any, database_url: str) -> None:
    from orch.dispatch.stats import queue_figures, throughput

    api = api_factory(database_url)
    core = api.headers("system")
    for outcome in ("completed", "failed", None):
        api.client.post("/dispatch", json={"core_id": "core-a", "action": "external", "max_retries": 0,
                                           "priority": "high"}, headers=api.headers("operator"))
        if outcome is None:
            continue  # this one stays queued
        task_id = api.client.post("/cores/core-a/claim", json={"limit": 1}, headers=core).json()["tasks"][0]["task_id"]
        for status in ("running", outcome):
            assert api.client.put(f"/jobs/{task_id}/status", json={"status": status, "attempt": 1},
                                  headers=core).status_code == 200
    minutes = throughput(api.settings)
    assert len(minutes) == 60
    assert (sum(m["completed"] for m in minutes), sum(m["failed"] for m in minutes)) == (1, 1)
    assert queue_figures(api.settings) == {"depth": {"critical": 0, "high": 1, "normal": 0, "low": 0},
                                           "queued": 1, "running": 0}
    client, _ = session_for(api, "viewer")
    live = client.get("/ui/overview/live", headers=HTML)
    assert live.status_code == 200 and "completed (1)" in live.text and "failed or timed out (1)" in live.text
