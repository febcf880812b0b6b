"""``POST /v1/redemptions`` and ``POST /v1/redemptions/validate`` on the lean path
(``app/lean.py``).

For a key that grants ``redeem``, a JSON body that ``RedemptionRequest`` accepts and no
Idempotency-Key, the request is counted against the rate limit and run by the engine on
the plain pool, as the route does, and answered with the route's status, headers and
body. A refusal (the rate limit's included) is rendered by the app's own handler of
that problem, as the route's would be: the limiter has counted the request by then, and
the route would count it again. Everything else is handed to the route before anything
was counted or changed."""

import re

from starlette.responses import Response
from starlette.types import Scope

from app.lean import LeanRoute, json_response
from app.models.api_key import ApiKey
from app.models.api_key import Scope as KeyScope
from app.schemas.redemption import RedemptionRequest
from app.services.redemptions.service import redemption, to_attempt, to_check, validation


async def _redeem(
    scope: Scope, _: re.Match[str], data: RedemptionRequest, key: ApiKey
) -> Response | None:
    state = scope["app"].state
    await state.redeem_limiter.hit(str(key.id))
    attempt = to_attempt(data, api_key_id=key.id, idempotency_key=None)
    return json_response(redemption(await state.redemptions.redeem(attempt), data), 201)


async def _validate(
    scope: Scope, _: re.Match[str], data: RedemptionRequest, key: ApiKey
) -> Response | None:
    state = scope["app"].state
    await state.redeem_limiter.hit(str(key.id))
    return json_response(validation(await state.redemptions.validate(to_check(data)), data), 200)


def routes() -> list[LeanRoute]:
    return [
        LeanRoute(
            re.compile("/v1/redemptions"),
            "/v1/redemptions",
            RedemptionRequest,
            KeyScope.redeem,
            _redeem,
        ),
        LeanRoute(
            re.compile("/v1/redemptions/validate"),
            "/v1/redemptions/validate",
            RedemptionRequest,
            KeyScope.redeem,
            _validate,
        ),
    ]
