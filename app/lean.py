"""The lean path: plain JSON POSTs on the hottest routes, answered without FastAPI's
routing and dependency solving (most of the CPU such a request costs).

``LeanPath`` is an ASGI layer just inside the Prometheus middleware (``app/metrics.py``
records its answers like any other). For a POST whose path a ``LeanRoute`` matches, with
no Idempotency-Key (its stored response needs the route's transaction) and no chunked
body, it takes the same steps as the route, with the app's own code:

1. the bearer key (``auth.bearer_secret``), from the key cache (``KeyCache``), granting
   the route's scope;
2. a declared JSON body within the body limit, read and validated with the route's
   model (``json.loads``, then ``model_validate``, as FastAPI does);
3. the route's ``answer``, which returns the response (byte for byte the route's) or
   ``None`` to hand the request to the route.

Anything else is handed, body and all, to the normal app, which answers exactly as it
always does; an ``answer`` hands over only before it changed anything. An error the
``answer`` raises is rendered by the app's own exception handlers (Starlette's
exception middleware), as a route's error is."""

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import bearer_secret
from app.models.api_key import ApiKey
from app.models.api_key import Scope as KeyScope
from app.services.api_keys import KeyCache

_JSON = b"application/json"

# The request's scope, the path's match, the validated body and the caller's key; the
# response, or None to hand the request to the route.
Answer = Callable[[Scope, re.Match[str], Any, ApiKey], Awaitable[Response | None]]


@dataclass(frozen=True)
class LeanRoute:
    path: re.Pattern[str]  # matched whole against the request's path
    route: str  # the route's template, which the metrics name it by
    model: type[BaseModel]  # of the JSON body
    scope: KeyScope  # that the caller's key must grant
    answer: Answer


def json_response(model: BaseModel, status: int) -> Response:
    """A response model as FastAPI serialises it (``model_dump_json``)."""
    return Response(
        model.model_dump_json().encode(), status_code=status, media_type="application/json"
    )


class LeanPath:
    def __init__(self, app: ASGIApp, *, routes: Sequence[LeanRoute], max_bytes: int) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, match = found
        key = await self._key(scope, route)
        if key is None:
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
            data = route.model.model_validate(json.loads(b"".join(chunks)))
        except Exception:  # invalid JSON (even too deeply nested), or a ValidationError
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            response = await route.answer(scope, match, data, key)
        except Exception as exc:
            await _render(exc, scope, receive, send)
            return
        if response is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[LeanRoute, re.Match[str]] | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        for route in self.routes:
            if match := route.path.fullmatch(scope["path"]):
                return route, match
        return None

    async def _key(self, scope: Scope, route: LeanRoute) -> ApiKey | None:
        """The caller's key when the request is a plain one (see the module)."""
        authorization = content_type = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = authorization or value
            elif name == b"content-type":
                content_type = content_type or value
            elif name == b"content-length":
                length = length or value
            elif name == b"idempotency-key" or name == b"transfer-encoding":
                return None
        secret = None if authorization is None else bearer_secret(authorization.decode("latin-1"))
        if (
            secret is None
            or content_type != _JSON
            or length is None
            or not length.isdigit()
            or int(length) > self.max_bytes
        ):
            return None
        keys: KeyCache = scope["app"].state.key_cache
        key = keys.active(secret)
        if key is None:
            try:
                key = await keys.find_plain(secret)
            except Exception:  # the route meets the same trouble and explains it
                return None
        return key if key is not None and key.grants(route.scope) else None


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
