"""The redeem/validate limit holds in all, whatever the number of worker processes."""

import pytest

from app.errors import TooManyRequests
from app.ratelimit import RateLimiter


def test_each_worker_process_allows_its_share_of_the_limit() -> None:
    limiter = RateLimiter("5/minute", processes=2)  # 2 here, 2 in the other: never over 5
    for _ in range(2):
        limiter.hit("key-a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.hit("key-a")
    assert "at most 5 per 1 minute" in refused.value.detail  # the limit the operator set
    assert int(refused.value.headers["Retry-After"]) >= 1
    limiter.hit("key-b")  # per API key


def test_one_process_allows_the_whole_limit() -> None:
    limiter = RateLimiter("2/second")
    limiter.hit("k")
    limiter.hit("k")
    with pytest.raises(TooManyRequests):
        limiter.hit("k")
