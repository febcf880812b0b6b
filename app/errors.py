"""Errors as RFC 9457 problem details.

Services raise ``AppError`` subclasses; one set of handlers renders every error,
the framework's own included, as ``application/problem+json`` with a stable ``type``
that clients branch on. No traceback ever reaches a caller."""

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import asyncpg
import sqlalchemy.exc
from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:coupons:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def sqlstate(exc: BaseException) -> str:
    """PostgreSQL's error code of an asyncpg error or of the asyncpg error behind a
    SQLAlchemy one ("" when there is none)."""
    orig = getattr(exc, "orig", None)
    cause = orig.__cause__ if orig is not None else exc
    return str(getattr(cause, "sqlstate", "") or "")


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


class AppError(Exception):
    """A refusal the caller can act on. Subclasses fix ``slug``, ``title`` and ``status``."""

    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class BadRequest(AppError):
    """Raised by the framework for a body it cannot decode; declared for the docs."""

    slug, title, status = "bad-request", "The request body cannot be read", 400


class Unauthorized(AppError):
    slug, title, status = "unauthorized", "Missing or invalid API key", 401


class Forbidden(AppError):
    slug, title, status = "forbidden", "The API key lacks the scope for this operation", 403


class NotFound(AppError):
    slug, title, status = "not-found", "Not found", 404


class Conflict(AppError):
    slug, title, status = "conflict", "Conflict with the current state", 409


class KeyTaken(Conflict):
    slug, title = "key-taken", "The key is already used by another coupon set"


class NameTaken(Conflict):
    slug, title = "name-taken", "The name is already used in this coupon set"


class PoolsNotSupported(Conflict):
    slug, title = "pools-not-supported", "Shared coupon sets have no pools"


class DefaultPoolProtected(Conflict):
    slug, title = "default-pool-protected", "The default pool cannot be renamed or deleted"


class LastAdminKey(Conflict):
    slug, title = "last-admin-key", "The last active admin key cannot be revoked"


class SetInUse(Conflict):
    slug, title = "set-in-use", "The coupon set has been used and cannot be deleted"


class PoolNotEmpty(Conflict):
    slug, title = "pool-not-empty", "The pool still holds codes"


class WrongSetKind(Conflict):
    slug, title = "wrong-set-kind", "The operation does not apply to this kind of set"


class SetArchived(Conflict):
    slug, title = "set-archived", "The coupon set is archived"


class NotYetValid(Conflict):
    slug, title = "not-yet-valid", "The coupon set's validity window has not started"


class Expired(Conflict):
    slug, title = "expired", "The coupon set's validity window has ended"


class PoolExhausted(Conflict):
    slug, title = "pool-exhausted", "No code is left in the pool"


class AlreadyRedeemed(Conflict):
    slug, title = "already-redeemed", "The code has been used already"


class MaxUsesReached(Conflict):
    slug, title = "max-uses-reached", "The code has been used as often as allowed"


class RecipientMismatch(Conflict):
    slug, title = "recipient-mismatch", "The code belongs to another recipient"


class Voided(Conflict):
    slug, title = "voided", "The code has been voided"


class NotReturnable(Conflict):
    slug, title = "code-not-returnable", "Only an assigned, unused code can be returned"


class AmbiguousCode(Conflict):
    slug, title = "ambiguous-code", "Several coupon sets hold this code; name the set"


class InvalidRedemptionState(Conflict):
    slug, title = "invalid-redemption-state", "The redemption is not in a state that allows this"


class HoldExpired(Conflict):
    slug, title = "hold-expired", "The hold expired before it was confirmed"


class InsufficientCodes(Conflict):
    slug, title = "insufficient-codes", "The pool has fewer free codes than the delivery needs"


class DeliveryNotEditable(Conflict):
    slug, title = "delivery-not-editable", "The delivery was confirmed and can no longer change"


class DeliveryNotFinished(Conflict):
    slug, title = "delivery-not-finished", "The delivery has not finished its confirm"


class TemplateInvalid(AppError):
    slug, title, status = "template-error", "The message template cannot be used", 422


class IdempotencyKeyInUse(Conflict):
    slug, title = "idempotency-key-in-use", "A request with this Idempotency-Key is still running"


class PayloadTooLarge(AppError):
    slug, title, status = "payload-too-large", "Request body too large", 413


class UnsupportedMediaType(AppError):
    slug, title, status = "unsupported-media-type", "The content type is not supported", 415


class ValidationFailed(AppError):
    slug, title, status = "validation-error", "The request is not valid", 422


class CodeSpaceTooSmall(AppError):
    slug, title, status = "code-space-too-small", "The pattern cannot make that many codes", 422


class IdempotencyKeyReused(AppError):
    slug, title, status = (
        "idempotency-key-reused",
        "The Idempotency-Key was used with a different request",
        422,
    )


class UnknownCode(AppError):
    slug, title, status = "unknown-code", "No coupon set holds this code", 404


class TooManyRequests(AppError):
    slug, title, status = "too-many-requests", "Too many requests", 429


class InvalidCursor(AppError):
    slug, title, status = "invalid-cursor", "The pagination cursor is not valid", 422


class ServiceUnavailable(AppError):
    slug, title, status = "service-unavailable", "Service temporarily unavailable", 503


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


def problem_response(
    request: Request,
    *,
    slug: str,
    title: str,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": correlation_id.get(),
        **extensions,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        request,
        slug=exc.slug,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        headers=exc.headers,
        **exc.extensions,
    )


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
    return problem_response(
        request,
        slug=ValidationFailed.slug,
        title=ValidationFailed.title,
        status=422,
        detail=detail,
        errors=errors,
    )


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
    return problem_response(
        request,
        slug=_HTTP_SLUGS.get(status, f"http-{status}"),
        title=phrase,
        status=status,
        detail=detail,
        headers=headers,
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs in Starlette's outermost middleware, outside the request-id middleware,
    # so the id is put on the response here.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    response = problem_response(
        request,
        slug="internal-error",
        title="Internal server error",
        status=500,
        detail="An unexpected error occurred; it has been logged with the request id.",
    )
    if request_id := correlation_id.get():
        response.headers["X-Request-ID"] = request_id
    return response


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


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The pool is exhausted or PostgreSQL is unreachable: a retry later can succeed.
    logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return problem_response(
        request,
        slug=ServiceUnavailable.slug,
        title=ServiceUnavailable.title,
        status=503,
        detail="The database is unavailable or busy; retry shortly.",
        headers={"Retry-After": "1"},
    )


DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    OSError,
)


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


async def _unstorable_text(request: Request, exc: Exception) -> JSONResponse:
    # A NUL character or an unpaired surrogate in a path or query parameter: PostgreSQL
    # text cannot hold it (bodies are refused earlier, field by field).
    return problem_response(
        request,
        slug=ValidationFailed.slug,
        title=ValidationFailed.title,
        status=422,
        detail="The request holds characters that cannot be stored: NUL or unpaired surrogates.",
    )


# SQLSTATE classes of a database that is gone or going: connection exception, no
# resources (too many connections), operator intervention (shutdown, starting up).
_UNAVAILABLE_STATES = ("08", "53", "57")


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """Driver errors that are not the more specific ones handled above."""
    state = sqlstate(exc)
    if state.startswith("22"):  # data exception: a value the request carried
        return await _unstorable_text(request, exc)
    if state[:2] in _UNAVAILABLE_STATES or getattr(exc, "connection_invalidated", False):
        return await _database_unavailable(request, exc)
    return await _unexpected_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
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
