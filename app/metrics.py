"""Prometheus: one middleware records every request (count, sizes, latency per route
template), those the lean assignment path answers included, into the registry that
``GET /metrics`` exposes."""

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """How many HTTP requests this process is serving now (``RequestMetrics`` counts
    them): background work (the webhook dispatcher) yields to requests while any are."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A request idle for a while (a long poll between its looks) does not count
        meanwhile: a client long-polling the feed does not hold the dispatcher back."""
        self.requests -= 1
        try:
            yield
        finally:
            self.requests += 1


class RequestMetrics(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware (what ``Instrumentator().instrument()`` adds), told
    the routes of the POSTs whose paths ``known`` match: the lean path answers those
    without routing, and they must not pay for the middleware's route match either."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        known: Sequence[tuple[re.Pattern[str], str]],
        excluded_handlers: Sequence[str],
        registry: CollectorRegistry,
        in_flight: InFlight,
    ) -> None:
        super().__init__(app, excluded_handlers=excluded_handlers, registry=registry)
        self._known = tuple(known)
        self._in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        self._in_flight.requests += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._in_flight.requests -= 1

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        scope = request.scope
        if scope["method"] == "POST" and not scope.get("root_path"):
            for path, route in self._known:
                if path.fullmatch(scope["path"]):
                    return route, True
        return super()._get_handler(request)


async def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return registry


Registry = Annotated[CollectorRegistry, Depends(_registry)]


async def _in_flight(request: Request) -> InFlight:
    in_flight: InFlight = request.app.state.in_flight
    return in_flight


RequestsInFlight = Annotated[InFlight, Depends(_in_flight)]
