"""Per-key rate limits for redeem and validate, so codes cannot be guessed by brute force.

A moving window per API key, kept in the process (``limits``). With several worker
processes each has its own window: set the limit per process accordingly."""

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.auth import CurrentKey
from app.errors import TooManyRequests


class RateLimiter:
    def __init__(self, limit: str) -> None:
        self.limit = parse(limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: str) -> None:
        if self._limiter.hit(self.limit, key):
            return
        reset_at, _ = self._limiter.get_window_stats(self.limit, key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(
            f"This API key may redeem or validate at most {self.limit}; retry later.",
            headers={"Retry-After": str(retry_after)},
        )


async def _redeem_rate(request: Request, caller: CurrentKey) -> None:
    limiter: RateLimiter = request.app.state.redeem_limiter
    limiter.hit(str(caller.id))


RedeemRateLimit = Annotated[None, Depends(_redeem_rate)]
