"""A lean way through the redemption's hot paths: ``POST /v1/redemptions`` and
``POST /v1/redemptions/validate``.

An ASGI layer that answers their plain case itself, without FastAPI's routing and
dependency solving (most of the CPU a request cost): a cached key that grants
``redeem``, a JSON body that ``RedemptionRequest`` accepts, and no Idempotency-Key. It
counts the request against the rate limit, runs the engine on the plain pool (as the
route does) and answers with the route's status, headers and body; a refusal (the
rate limit's included) is rendered by the app's own handler of that problem, as the
route's would be: the limiter has counted the request by then, and the route would
count it again. Anything else (an unknown or uncached key, a missing scope, an
invalid body, an Idempotency-Key) is handed, body and all, to the normal app, which
answers exactly as it always does; nothing was counted or changed before the
hand-over.

``LeanRoutes`` is generic (the steps of any plain JSON POST: key, scope, body, model,
answer, metrics); ``redemption_routes()`` gives it the two routes. The assignment's
lean path (app/assign_fast_path.py) takes the same steps for its one route."""

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from timeit import default_timer
from typing import Any

from prometheus_fastapi_instrumentator.metrics import Info
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.assign_fast_path import _handler, _replay
from app.models.api_key import ApiKey
from app.models.api_key import Scope as KeyScope
from app.models.redemption import RedemptionRequest
from app.services import api_keys
from app.services.redemptions.service import redemption, to_attempt, to_check, validation

_JSON = b"application/json"

# The plain case's answer: the app's state, the body as its model, the caller's key;
# None hands the request to the app.
Answer = Callable[[Any, Any, ApiKey], Awaitable[Response | None]]


@dataclass(frozen=True)
class LeanRoute:
    path: str  # the route's path, which the metrics also name it by
    model: type[BaseModel]  # of the JSON body
    scope: KeyScope  # that the caller's key must grant
    answer: Answer


def _metrics(app: ASGIApp) -> PrometheusInstrumentatorMiddleware | None:
    """The Prometheus middleware inside ``app`` (other lean layers may sit between)."""
    while not isinstance(app, PrometheusInstrumentatorMiddleware):
        app = getattr(app, "app", None)  # type: ignore[assignment]
        if app is None:
            return None
    return app


class LeanRoutes:
    """Placed outside the Prometheus middleware: the requests it answers itself are
    counted by that middleware's instrumentations, called here without its second
    route match; the others pass through it as before."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[LeanRoute], max_bytes: int) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}
        self.max_bytes = max_bytes
        self.metrics = _metrics(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = default_timer()
        route = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
            else None
        )
        key = None if route is None else await self._key(scope, route)
        if route is None or key is None:
            await self.app(scope, receive, send)
            return
        # The body, kept to replay it to the app if this is not the plain case.
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await self.app(scope, _replay(messages, receive), send)
                return
            if not message.get("more_body", False):
                break
        try:
            body = b"".join(m.get("body", b"") for m in messages)
            data = route.model.model_validate(json.loads(body))
        except Exception:  # invalid JSON (even too deeply nested), or a ValidationError
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            response = await route.answer(scope["app"].state, data, key)
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(Request(scope), exc)
        if response is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        await response(scope, receive, send)
        if self.metrics is not None:
            self._count(Request(scope), response, route.path, default_timer() - start)

    async def _key(self, scope: Scope, route: LeanRoute) -> ApiKey | None:
        """The caller's key when the request is a plain one: a bearer key that is active
        and grants the route's scope, a JSON body of a declared, allowed length, and no
        Idempotency-Key (whose stored response needs the route's transaction)."""
        headers = dict(scope["headers"])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        length = headers.get(b"content-length", b"")
        if (
            len(headers) != len(scope["headers"])  # a repeated header: the app decides
            or b"idempotency-key" in headers
            or b"transfer-encoding" in headers
            or scheme.lower() != "bearer"
            or not secret.strip()
            or headers.get(b"content-type") != _JSON
            or not length.isdigit()
            or int(length) > self.max_bytes
        ):
            return None
        key = api_keys.cached_active(secret.strip())
        if key is None:
            try:
                pool = scope["app"].state.driver_pool
                key = await api_keys.find_active_plain(pool, secret=secret.strip())
            except Exception:  # the route meets the same trouble and explains it
                return None
        return key if key is not None and key.grants(route.scope) else None

    def _count(self, request: Request, response: Response, path: str, duration: float) -> None:
        """What the Prometheus middleware records for a request (no streaming here)."""
        assert self.metrics is not None
        status = str(response.status_code)
        info = Info(
            request=request,
            response=response,
            method=request.method,
            modified_handler=path,
            modified_status=status[0] + "xx" if self.metrics.should_group_status_codes else status,
            modified_duration=duration,
            modified_duration_without_streaming=duration,
        )
        for instrumentation in self.metrics.instrumentations:
            instrumentation(info)


def _json(model: BaseModel, status: int) -> Response:
    return Response(
        model.model_dump_json().encode(), status_code=status, media_type="application/json"
    )


async def _redeem(state: Any, data: RedemptionRequest, key: ApiKey) -> Response:
    state.redeem_limiter.hit(str(key.id))
    attempt = to_attempt(data, api_key_id=key.id, idempotency_key=None)
    return _json(redemption(await state.redemptions.redeem(attempt), data), 201)


async def _validate(state: Any, data: RedemptionRequest, key: ApiKey) -> Response:
    state.redeem_limiter.hit(str(key.id))
    return _json(validation(await state.redemptions.validate(to_check(data)), data), 200)


def redemption_routes() -> list[LeanRoute]:
    return [
        LeanRoute("/v1/redemptions", RedemptionRequest, KeyScope.redeem, _redeem),
        LeanRoute("/v1/redemptions/validate", RedemptionRequest, KeyScope.redeem, _validate),
    ]
