"""Errors as JSON with the right status: the API never answers a caller's mistake with a 500.

A domain error (:class:`orch.errors.OrchError`) answers with its own class's status, body and headers
(the tree and its statuses are in ``orch/errors.py``): nothing here chooses a status for one, so a route
raises the domain's own exception and never builds an HTTP error by hand.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from orch.errors import OrchError
from orch.logging_config import get_logger
from orch.storage.engine import DatabaseCorrupt, StorageError, is_corruption_error, known_corruption

log = get_logger(__name__)


def _lines(exc: RequestValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return lines


def _json(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def error_response(exc: OrchError) -> JSONResponse:
    """What the API answers for a domain error: its class's status, its body, its headers."""
    return JSONResponse(exc.http_body(), status_code=exc.status_code, headers=exc.http_headers() or None)


def document_error_body(app: FastAPI) -> None:
    """Make the OpenAPI schema describe the 422 body :func:`install_error_handlers` really sends.

    FastAPI documents its own ``HTTPValidationError`` (``detail`` as an array of objects) for every route
    with parameters that does not declare a 422 itself; ORCH's body is ``{"detail": str, "errors": [str]}``
    (:class:`orch.api.schemas.ErrorBody`). Routes that use ``errors()`` already say so; this covers the rest.
    """
    from orch.api.schemas import ERRORS

    generate = app.openapi  # FastAPI's: builds the schema once and keeps it in app.openapi_schema

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "HTTPValidationError" in components:  # not corrected yet (the schema is built once)
            ours = {"description": ERRORS[422]["description"],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    answers = operation.get("responses", {})
                    if "HTTPValidationError" in str(answers.get("422", "")):
                        answers["422"] = ours
            del components["HTTPValidationError"]
            components.pop("ValidationError", None)
            components.setdefault("ErrorBody", ERRORS[422]["model"].model_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    document_error_body(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, "invalid request", errors=_lines(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(OrchError)
    async def domain_error(request: Request, exc: OrchError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_corruption_error(exc):  # the engine has recorded it; say what it is and what to do
            url = request.app.state.settings.database.url or ""
            damage = known_corruption(url) or str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.error("database corrupt answering %s %s: %s", request.method, request.url.path, damage)
            return error_response(DatabaseCorrupt(url, damage))
        log.error("database error answering %s %s: %s", request.method, request.url.path, exc.__class__.__name__,
                  exc_info=exc)
        return _json(StorageError.status_code, "database unavailable; the API log has the cause",
                     headers={"Retry-After": str(StorageError.retry_after)})

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error answering %s %s", request.method, request.url.path, exc_info=exc)
        return _json(500, "internal error; the API log has the traceback")
