"""The one exception tree: every exception ORCH defines is an ``OrchError`` (but the console's control flow),
each with a 4xx/5xx status on its class, no two share a name, ``orch/errors.py``'s docstring draws the tree
as it is, and the API answers with the class's status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

from api_fixtures import PASSWORD, Api

import orch
from orch import errors as errors_module
from orch.backup.catalog_view import BackupNotFound, InvalidBackupName
from orch.dispatch.errors import InvalidTask, TaskNotFound
from orch.errors import OrchError
from orch.monitoring.healing import HealRunNotFound
from orch.monitoring.silences import SilenceNotFound
from orch.security.login import LoginFailed
from orch.security.tokens import TokenError
from orch.security.users import UserError, UserExists

# Not errors a user can act on but the console's ways of answering a browser (a redirect, an HTML page).
CONTROL_FLOW = {"orch.api.console.routes.LoginRedirect", "orch.api.console.routes.PageRefused",
                "orch.api.console.session.CsrfRefused"}
_TREE_LINE = re.compile(r"^(?P<indent> *)\* (?P<name>\w+) (?P<status>\d{3})\b")


def _modules() -> list[ModuleType]:
    """Every module of the ``orch`` package (the migrations are Alembic's scripts, run by Alembic)."""
    return [importlib.import_module(info.name) for info in pkgutil.walk_packages(orch.__path__, "orch.")
            if not info.name.startswith("orch.storage.migrations")]


def _exceptions() -> list[type[BaseException]]:
    """Every exception class defined under ``orch/``."""
    return [obj for module in _modules() for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__]


def _parent(cls: type[OrchError]) -> str:
    return next(base.__name__ for base in cls.__bases__ if issubclass(base, OrchError))


def test_every_orch_exception_is_in_the_tree_with_an_error_status_and_its_own_name() -> None:
    found = _exceptions()
    names = [cls.__name__ for cls in found]
    assert len(found) > 30 and OrchError in found
    assert sorted({name for name in names if names.count(name) > 1}) == []
    outside = {f"{cls.__module__}.{cls.__qualname__}" for cls in found if not issubclass(cls, OrchError)}
    assert outside == CONTROL_FLOW
    for cls in found:
        if issubclass(cls, OrchError):
            assert 400 <= cls.status_code <= 599, cls
            assert cls.retry_after is None or cls.retry_after > 0, cls


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    """``orch/errors.py`` documents the tree in one place: each class once, under its parent, with its status."""
    drawn: dict[str, tuple[int, str | None]] = {}  # name -> (status, parent)
    parents: list[tuple[int, str]] = []  # (indent, name) of the open branches
    for line in (errors_module.__doc__ or "").splitlines():
        match = _TREE_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        assert match["name"] not in drawn, f"{match['name']} is drawn twice"
        drawn[match["name"]] = (int(match["status"]), parents[-1][1] if parents else None)
        parents.append((indent, match["name"]))
    classes = [cls for cls in _exceptions() if issubclass(cls, OrchError)]
    actual = {cls.__name__: (cls.status_code, None if cls is OrchError else _parent(cls)) for cls in classes}
    assert drawn == actual


def test_the_api_answers_with_the_class_status(api: Api) -> None:
    admin, operator = api.headers("admin"), api.headers("operator")
    checks: list[tuple[type[OrchError], Any, str | None]] = [
        (UserExists, api.client.post("/users", json={"username": "vera", "password": PASSWORD + "x",
                                                     "role": "viewer"}, headers=admin),
         "user 'vera' already exists"),  # a 409 chosen by the class, not by matching its message
        (UserError, api.client.post("/users", json={"username": "newbie", "password": "short", "role": "viewer"},
                                    headers=admin), None),
        (TaskNotFound, api.client.get("/tasks/no-such-task", headers=operator), "no task no-such-task"),
        (SilenceNotFound, api.client.delete("/silences/999", headers=admin), None),
        (HealRunNotFound, api.client.post("/heals/999/approval", json={"approve": True}, headers=admin), None),
        (BackupNotFound, api.client.post("/backups/orch_backup_none.db.gz/verify", headers=operator), None),
        (InvalidBackupName, api.client.post("/backups/..%2F..%2Fetc/verify", headers=operator), None),
        (TokenError, api.client.get("/tasks/any", headers={"Authorization": "Bearer not-a-token"}), "token malformed"),
        (LoginFailed, api.login("vera", "wrong password"), None),
    ]
    for cls, response, detail in checks:
        assert response.status_code == cls.status_code, (cls.__name__, response.text)
        if detail is not None:
            assert response.json() == {"detail": detail}, cls.__name__
    assert checks[-1][1].headers["www-authenticate"] == "Bearer"

    invalid = api.client.post("/dispatch", json={"core_id": "core-a", "action": "explode"}, headers=operator)
    assert invalid.status_code == InvalidTask.status_code
    assert invalid.json()["detail"] == "invalid task" and invalid.json()["errors"], invalid.text

