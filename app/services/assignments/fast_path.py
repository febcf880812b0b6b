"""A lean way through the hot path: ``POST /v1/coupon-sets/{set_id}/assignments``.

An ASGI layer that answers the plain success case of an assignment itself, without
FastAPI's routing and dependency solving (most of the CPU a request cost): a key that
grants ``assign``, a JSON body that ``AssignmentCreate`` accepts, no Idempotency-Key,
and a plain claim (``Claimer.claim``) that finds a code. It answers with the same status,
headers and body as the route (``app/routers/assignments.py``).

Anything else is handed, body and all, to the normal app, which answers exactly as it
always does. A request is handed over either before any claim (an unknown or revoked
key, a missing scope, an invalid body, an Idempotency-Key) or with the claim's outcome
(``Miss``: nothing claimed, or no code found), which the route takes instead of claiming
again: one claim per request. Errors of the database are rendered by the app's own
exception handlers; the Prometheus middleware outside this layer records every request
(``app/metrics.py``)."""

import json
import re
from typing import Annotated

from fastapi import Depends, Request
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import bearer_secret
from app.errors import AppError
from app.models.api_key import Scope as KeyScope
from app.schemas.assignment import AssignmentCreate
from app.services.api_keys import KeyCache
from app.services.assignments.claim import Claimer, Miss

# The route's path; set references that need no decoding care (ids and ordinary keys,
# within the route's length limit) are taken here, anything else goes to the route.
PATH = re.compile(r"/v1/coupon-sets/([A-Za-z0-9._~-]{1,64})/assignments")
ROUTE = "/v1/coupon-sets/{set_id}/assignments"
_JSON = b"application/json"
# Where a handed-over request carries the outcome of its claim to the route.
_HANDED_OVER = "coupons.assignment_claim"


class AssignFastPath:
    """Placed just inside the Prometheus middleware, which records the requests this
    answers like any other."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or (match := PATH.fullmatch(scope["path"])) is None
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
        secret = None if authorization is None else bearer_secret(authorization.decode("latin-1"))
        if (
            secret is None
            or content_type != _JSON
            or length is None
            or not length.isdigit()
            or int(length) > self.max_bytes
        ):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        keys: KeyCache = state.key_cache
        key = keys.active(secret)
        if key is None:
            try:
                key = await keys.find_plain(secret)
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
        claimer: Claimer = state.claimer
        try:
            outcome = await claimer.claim(set_ref=match.group(1), data=data, actor=key)
        except AppError:
            # A refusal (archived, not yet or no longer valid), before any claim: the
            # route explains it.
            outcome = Miss.skipped
        except Exception as exc:
            await _render(exc, scope, receive, send)
            return
        if isinstance(outcome, Miss):
            scope[_HANDED_OVER] = outcome
            await self.app(scope, _replay(messages, receive), send)
            return
        response = Response(
            outcome.assignment.model_dump_json().encode(),
            status_code=201 if outcome.created else 200,
            media_type="application/json",
        )
        await response(scope, receive, send)


async def _handed_over(request: Request) -> Miss | None:
    miss: Miss | None = request.scope.get(_HANDED_OVER)
    return miss


# The outcome of the lean path's claim for a request it handed to the route, if it made one.
HandedOver = Annotated[Miss | None, Depends(_handed_over)]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives the messages read already, then the rest."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _render(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """The app's answer to ``exc``, by Starlette's exception middleware with the app's
    handlers, as a route's error gets it. As there, the catch-all (``Exception``, 500)
    is left to Starlette's outermost middleware: the exception is raised on to it."""
    handlers = {
        cls: handler
        for cls, handler in scope["app"].exception_handlers.items()
        if cls not in (500, Exception)
    }

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    await ExceptionMiddleware(failing, handlers=handlers)(scope, receive, send)
