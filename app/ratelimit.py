"""Per-key rate limits for redeem and validate, so codes cannot be guessed by brute force.

A moving window per API key, kept in the process (``limits``). With several worker
processes each has its own window, so each allows its share of the configured limit,
rounded down (at least 1): spread over the workers, as the kernel spreads a caller's
connections, a key gets at most the limit in all (a limit smaller than the number of
workers excepted: one each); one connection alone, which stays with one worker, gets
that worker's share."""

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
    def __init__(self, limit: str, *, processes: int = 1) -> None:
        total = parse(limit)
        self.total = total  # what the caller is told
        # This process's share: the same window, a part of the amount.
        self.limit = type(total)(max(1, total.amount // processes), total.multiples)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: str) -> None:
        if self._limiter.hit(self.limit, key):
            return
        reset_at, _ = self._limiter.get_window_stats(self.limit, key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(
            f"This API key may redeem or validate at most {self.total}; retry later.",
            headers={"Retry-After": str(retry_after)},
        )


async def _redeem_rate(request: Request, caller: CurrentKey) -> None:
    limiter: RateLimiter = request.app.state.redeem_limiter
    limiter.hit(str(caller.id))


RedeemRateLimit = Annotated[None, Depends(_redeem_rate)]
