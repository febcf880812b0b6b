"""A lean way through the hot path: ``POST /v1/coupon-sets/{set_id}/assignments``.

An ASGI layer that answers the plain success case of an assignment itself, without
FastAPI's routing and dependency solving (most of the CPU a request cost): a cached key
that grants ``assign``, a JSON body that ``AssignmentCreate`` accepts, no
Idempotency-Key, and a claim that finds its code. It answers with the same status,
headers and body as the route (``app/routers/assignments.py``). Anything else (an
unknown or uncached key, a missing scope, an invalid body, a shared set, an unknown
set or pool, an empty pool, a refusal) is handed, body and all, to the normal app,
which answers exactly as it always does; nothing was changed before the hand-over,
since a claim either commits a code (then this layer answers) or changes nothing.
Errors of the database are rendered by the app's own exception handlers."""

import json
import re
from collections.abc import Awaitable, Callable
from timeit import default_timer
from typing import Any

from prometheus_fastapi_instrumentator.metrics import Info
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError
from app.models.api_key import Scope as KeyScope
from app.models.assignment import AssignmentCreate
from app.services import api_keys, assignments

# The route's path; set references that need no decoding care (ids and ordinary keys,
# within the route's length limit) are taken here, anything else goes to the route.
_PATH = re.compile(r"/v1/coupon-sets/([A-Za-z0-9._~-]{1,64})/assignments")
_JSON = b"application/json"
_HANDLER = "/v1/coupon-sets/{set_id}/assignments"  # the metrics' label, the route's path

Handler = Callable[[Request, Exception], Awaitable[Response]]


class AssignFastPath:
    """Placed just outside the Prometheus middleware: the requests it answers itself
    are counted by that middleware's instrumentations, called here without its second
    route match; the others pass through it as before."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = app if isinstance(app, PrometheusInstrumentatorMiddleware) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = default_timer()
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or (match := _PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        authorization = content_type = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = authorization or value
            elif name == b"content-type":
                content_type = content_type or value
            elif name == b"content-length":
                length = length or value
            elif name == b"idempotency-key" or name == b"transfer-encoding":
                await self.app(scope, receive, send)
                return
        secret = ""
        if authorization is not None:
            scheme, _, secret = authorization.decode("latin-1").partition(" ")
            secret = secret.strip() if scheme.lower() == "bearer" else ""
        if (
            not secret
            or content_type != _JSON
            or length is None
            or not length.isdigit()
            or int(length) > self.max_bytes
        ):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        key = api_keys.cached_active(secret)
        if key is None:
            try:
                key = await api_keys.find_active_plain(state.driver_pool, secret=secret)
            except Exception:  # the route meets the same trouble and explains it
                key = None
        if key is None or not key.grants(KeyScope.assign):
            await self.app(scope, receive, send)
            return
        # The body, kept to replay it to the app if this is not the plain case.
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await self.app(scope, _replay(messages, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            data = AssignmentCreate.model_validate(json.loads(b"".join(chunks)))
        except Exception:  # invalid JSON (even too deeply nested), or a ValidationError
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            result = await assignments.assign_autocommit(
                state.driver_pool,
                set_ref=match.group(1),
                data=data,
                actor=key,
                coalescer=state.claim_coalescer,
            )
        except AppError:
            # A refusal (archived, not yet or no longer valid): the route explains it.
            await self.app(scope, _replay(messages, receive), send)
            return
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
        else:
            if result is None:
                await self.app(scope, _replay(messages, receive), send)
                return
            assignment, created = result
            response = Response(
                assignment.model_dump_json().encode(),
                status_code=201 if created else 200,
                media_type="application/json",
            )
        await response(scope, receive, send)
        if self.metrics is not None:
            self._count(Request(scope), response, default_timer() - start)

    def _count(self, request: Request, response: Response, duration: float) -> None:
        """What the Prometheus middleware records for a request (no streaming here)."""
        assert self.metrics is not None
        status = str(response.status_code)
        info = Info(
            request=request,
            response=response,
            method=request.method,
            modified_handler=_HANDLER,
            modified_status=status[0] + "xx" if self.metrics.should_group_status_codes else status,
            modified_duration=duration,
            modified_duration_without_streaming=duration,
        )
        for instrumentation in self.metrics.instrumentations:
            instrumentation(info)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives the messages read already, then the rest."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _handler(app: Any, exc: Exception) -> Handler | None:
    """The app's handler of ``exc``, found as Starlette finds it (by the exception's
    classes, most specific first); None for the catch-all of unexpected errors, which
    is left to Starlette's outermost middleware as in the route."""
    handlers: dict[Any, Handler] = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
