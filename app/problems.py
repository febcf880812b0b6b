"""Errors as RFC 9457 problem details: the HTTP side of app/errors.py.

One set of handlers renders every error, the framework's own included, as
``application/problem+json`` with a stable ``type`` that clients branch on; routes
declare theirs with ``problem_responses``; a database that is gone or busy is told
apart from a bug. No traceback ever reaches a caller."""

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
import sqlalchemy.exc
from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from app.db_errors import sqlstate
from app.errors import (
    AppError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)

logger = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:coupons:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_PREFIX + slug


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Path to the offending field, e.g. body.label")
    message: str
    type: str = Field(description="Machine-readable error code from the validator")


class Problem(BaseModel):
    """An RFC 9457 problem. Extra members (``errors``, ``request_id``, counts…) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[problem_type("not-found")])
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path")
    request_id: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="Field errors, for validation problems"
    )


# Types the framework itself produces, by status code.
_HTTP_SLUGS: dict[int, str] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def _render(
    request: Request, error: AppError, *, slug: str, title: str, status: int
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": error.detail,
        "instance": request.url.path,
        "request_id": correlation_id.get(),
        **error.extensions,
    }
    return JSONResponse(
        body, status_code=status, headers=error.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_response(request: Request, error: AppError) -> JSONResponse:
    """``error`` as the answer to ``request``."""
    return _render(request, error, slug=error.slug, title=error.title, status=error.status)


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it can refuse with, as problem+json.

    Every route can also answer 400 (undecodable body), 401/403 (auth), 413 (body
    size), 422 (validation) and 503 (database unavailable), added here."""
    always: tuple[type[AppError], ...] = (
        BadRequest,
        Unauthorized,
        Forbidden,
        PayloadTooLarge,
        ValidationFailed,
        ServiceUnavailable,
    )
    by_status: dict[int, list[type[AppError]]] = {}
    for error in (*always, *errors):
        by_status.setdefault(error.status, []).append(error)
    return {
        status: {
            "description": "; ".join(
                f"`{problem_type(e.slug)}`: {e.title}" for e in dict.fromkeys(kinds)
            ),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, kinds in sorted(by_status.items())
    }


def merge_responses(
    base: dict[int | str, dict[str, Any]], extra: dict[int | str, dict[str, Any]]
) -> dict[int | str, dict[str, Any]]:
    """Both sets of declared responses; descriptions of a shared status are joined."""
    merged = {status: dict(response) for status, response in base.items()}
    for status, response in extra.items():
        if status not in merged:
            merged[status] = response
        elif response["description"] not in merged[status]["description"]:
            merged[status]["description"] += "; " + response["description"]
    return merged


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(request, exc)


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without ``input`` or ``ctx``: they can echo secrets or objects."""
    return [
        {"loc": list(error.get("loc", ())), "message": error.get("msg", ""), "type": error["type"]}
        for error in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    first = errors[0] if errors else None
    detail = (
        f"{'.'.join(str(part) for part in first['loc'])}: {first['message']}"
        if first
        else "The request is not valid"
    )
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(request, ValidationFailed(detail, errors=errors))


def _allowed_methods(request: Request) -> str:
    """Starlette's 405 names only the first route of the path; list them all."""
    allowed = [
        method
        for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else {}
    if status == 405:
        headers["Allow"] = _allowed_methods(request)
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    # The framework's own error: its status and phrase rather than a type of the catalogue.
    error = AppError(detail, headers=headers)
    slug = _HTTP_SLUGS.get(status, f"http-{status}")
    return _render(request, error, slug=slug, title=phrase, status=status)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs in Starlette's outermost middleware, outside the request-id middleware,
    # so the id is put on the response here.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # The base class is the catalogue's internal error.
    unexpected = AppError("An unexpected error occurred; it has been logged with the request id.")
    response = problem_response(request, unexpected)
    if request_id := correlation_id.get():
        response.headers["X-Request-ID"] = request_id
    return response


# Database faults, told apart from bugs: the database is gone or busy (503), or a value
# the request carried cannot be stored (422).
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    OSError,
)


# SQLSTATE classes of a database that is gone, going or busy: connection exception, no
# resources (too many connections), operator intervention (shutdown, starting up),
# transaction rollback (a deadlock or serialization failure, which a retry undoes).
_UNAVAILABLE_STATES = ("08", "40", "53", "57")


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The pool is exhausted or PostgreSQL is unreachable: a retry later can succeed.
    logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    busy = ServiceUnavailable(
        "The database is unavailable or busy; retry shortly.", headers={"Retry-After": "1"}
    )
    return problem_response(request, busy)


async def _unstorable_text(request: Request, exc: Exception) -> JSONResponse:
    # A NUL character or an unpaired surrogate in a path or query parameter: PostgreSQL
    # text cannot hold it (bodies are refused earlier, field by field).
    unstorable = ValidationFailed(
        "The request holds characters that cannot be stored: NUL or unpaired surrogates."
    )
    return problem_response(request, unstorable)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """Driver errors that are not the more specific ones handled above."""
    state = sqlstate(exc)
    if state.startswith("22"):  # data exception: a value the request carried
        return await _unstorable_text(request, exc)
    if state[:2] in _UNAVAILABLE_STATES or getattr(exc, "connection_invalidated", False):
        return await _database_unavailable(request, exc)
    return await _unexpected_error(request, exc)


# Not an HTTP status of the standard: nginx's "client closed request", which no client
# reads; it keeps the request out of the 5xx counts of the metrics.
CLIENT_CLOSED_REQUEST = 499


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed its connection before it had sent the whole body: nothing to
    # answer and nothing wrong with the service (what the request began is undone by its
    # own error handling, e.g. an import's job is marked failed).
    logger.info("the client went away during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    for error in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(UnicodeEncodeError, _unstorable_text)
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, _driver_error)
    # The same for the plain asyncpg pool of the hot paths. Its client-side errors come
    # from connections that broke under a query (the server went away); each request
    # holds its own connection, so they are not misuse.
    app.add_exception_handler(asyncpg.PostgresError, _driver_error)
    app.add_exception_handler(asyncpg.InterfaceError, _database_unavailable)
    app.add_exception_handler(asyncpg.InternalClientError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
