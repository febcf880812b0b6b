"""A lean way through the hot path: ``POST /v1/coupon-sets/{set_id}/assignments``.

A route of the lean path (``app/lean.py``): for a key that grants ``assign``, a JSON
body that ``AssignmentCreate`` accepts and no Idempotency-Key, it runs the plain claim
(``Claimer.claim``) and, when that finds a code, answers with the same status, headers
and body as the route (``app/routers/assignments.py``).

Anything else is handed, body and all, to the normal app, which answers exactly as it
always does. A request is handed over either before any claim (an unknown or revoked
key, a missing scope, an invalid body, an Idempotency-Key) or with the claim's outcome
(``Miss``: nothing claimed, or no code found), which the route takes instead of claiming
again: one claim per request. Errors of the database are rendered by the app's own
exception handlers; the Prometheus middleware outside this layer records every request
(``app/metrics.py``)."""

import re
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response
from starlette.types import Scope

from app.errors import AppError
from app.lean import LeanRoute, json_response
from app.models.api_key import ApiKey
from app.models.api_key import Scope as KeyScope
from app.schemas.assignment import AssignmentCreate
from app.services.assignments.claim import Claimer, Miss

# Set references that need no decoding care (ids and ordinary keys, within the route's
# length limit) are taken here, anything else goes to the route.
PATH = re.compile(r"/v1/coupon-sets/([A-Za-z0-9._~-]{1,64})/assignments")
ROUTE = "/v1/coupon-sets/{set_id}/assignments"
# Where a handed-over request carries the outcome of its claim to the route.
_HANDED_OVER = "coupons.assignment_claim"


async def _assign(
    scope: Scope, match: re.Match[str], data: AssignmentCreate, key: ApiKey
) -> Response | None:
    claimer: Claimer = scope["app"].state.claimer
    try:
        outcome = await claimer.claim(set_ref=match.group(1), data=data, actor=key)
    except AppError:
        # A refusal (archived, not yet or no longer valid), before any claim: the route
        # explains it.
        outcome = Miss.skipped
    if isinstance(outcome, Miss):
        scope[_HANDED_OVER] = outcome
        return None
    return json_response(outcome.assignment, 201 if outcome.created else 200)


def route() -> LeanRoute:
    return LeanRoute(PATH, ROUTE, AssignmentCreate, KeyScope.assign, _assign)


async def _handed_over(request: Request) -> Miss | None:
    miss: Miss | None = request.scope.get(_HANDED_OVER)
    return miss


# The outcome of the lean path's claim for a request it handed to the route, if it made one.
HandedOver = Annotated[Miss | None, Depends(_handed_over)]
