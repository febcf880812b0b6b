"""Per-key rate limits for redeem and validate, so codes cannot be guessed by brute force.

A moving window per API key (``limits``), kept where ``COUPONS_RATE_LIMIT_STORAGE``
says:

- ``memory://`` (the default): in the process. With several worker processes each has
  its own window, so each allows its share of the configured limit, rounded down (at
  least 1): spread over the workers, as the kernel spreads a caller's connections, a key
  gets at most the limit in all (a limit smaller than the number of workers excepted:
  one each); one connection alone, which stays with one worker, gets that worker's
  share. Several instances each allow their own limit.
- ``redis://host:port/db`` (also ``rediss://``, ``redis+unix://``): one window per key
  shared by every process of every instance, which each then checks against the whole
  limit. A storage that does not answer refuses the request with a ``503`` rather than
  let guesses through unchecked."""

import logging
import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter as SharedWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.auth import CurrentKey
from app.errors import ServiceUnavailable, TooManyRequests

logger = logging.getLogger(__name__)

_SHARED_SCHEMES = ("redis://", "rediss://", "redis+unix://")


def is_shared(storage: str) -> bool:
    return storage.startswith(_SHARED_SCHEMES)


class RateLimiter:
    def __init__(self, limit: str, *, processes: int = 1, storage: str = "memory://") -> None:
        total = parse(limit)
        self.total = total  # what the caller is told
        self._local: MovingWindowRateLimiter | None = None
        self._shared: SharedWindow | None = None
        self.limit: RateLimitItem
        if is_shared(storage):
            # One window for all processes: each checks the whole limit. The async
            # client of the same storage keeps the event loop free while Redis answers.
            self.limit = total
            self._shared = SharedWindow(
                storage_from_string("async+" + storage, wrap_exceptions=True)
            )
        elif storage.startswith("memory://"):
            # This process's share: the same window, a part of the amount.
            self.limit = type(total)(max(1, total.amount // processes), total.multiples)
            self._local = MovingWindowRateLimiter(MemoryStorage())
        else:
            raise ValueError(f"unsupported rate limit storage: {storage.split(':', 1)[0]}://")

    async def hit(self, key: str) -> None:
        if self._local is not None:
            if self._local.hit(self.limit, key):
                return
            reset_at, _ = self._local.get_window_stats(self.limit, key)
        else:
            assert self._shared is not None
            try:
                if await self._shared.hit(self.limit, key):
                    return
                reset_at, _ = await self._shared.get_window_stats(self.limit, key)
            except (StorageError, OSError) as exc:
                logger.warning("rate limit storage unavailable: %s", type(exc).__name__)
                raise ServiceUnavailable(
                    "The rate limit cannot be checked just now; retry shortly.",
                    headers={"Retry-After": "1"},
                ) from None
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(
            f"This API key may redeem or validate at most {self.total}; retry later.",
            headers={"Retry-After": str(retry_after)},
        )


async def _redeem_rate(request: Request, caller: CurrentKey) -> None:
    limiter: RateLimiter = request.app.state.redeem_limiter
    await limiter.hit(str(caller.id))


RedeemRateLimit = Annotated[None, Depends(_redeem_rate)]
