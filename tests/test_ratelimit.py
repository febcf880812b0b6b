"""The redeem/validate limit holds in all, whatever the number of processes and instances."""

import uuid
from collections.abc import Iterator

import pytest

from app.errors import ServiceUnavailable, TooManyRequests
from app.ratelimit import RateLimiter
from tests.external import free_port, redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def test_each_worker_process_allows_its_share_of_the_limit() -> None:
    limiter = RateLimiter("5/minute", processes=2)  # 2 here, 2 in the other: never over 5
    for _ in range(2):
        await limiter.hit("key-a")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.hit("key-a")
    assert "at most 5 per 1 minute" in refused.value.detail  # the limit the operator set
    assert int(refused.value.headers["Retry-After"]) >= 1
    await limiter.hit("key-b")  # per API key


async def test_one_process_allows_the_whole_limit() -> None:
    limiter = RateLimiter("2/second")
    await limiter.hit("k")
    await limiter.hit("k")
    with pytest.raises(TooManyRequests):
        await limiter.hit("k")


async def test_a_shared_storage_holds_the_limit_across_processes(redis_url: str) -> None:
    # Two limiters on one Redis stand for two processes (or instances): together they
    # allow the whole limit once, not once each nor a share each.
    key = str(uuid.uuid4())
    first = RateLimiter("5/minute", processes=4, storage=redis_url)
    second = RateLimiter("5/minute", processes=4, storage=redis_url)
    for limiter in (first, second, first, second, first):
        await limiter.hit(key)
    for limiter in (first, second):
        with pytest.raises(TooManyRequests) as refused:
            await limiter.hit(key)
        assert int(refused.value.headers["Retry-After"]) >= 1
    await second.hit(str(uuid.uuid4()))  # per API key


async def test_an_unreachable_storage_refuses_rather_than_lets_through() -> None:
    limiter = RateLimiter("5/minute", storage=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ServiceUnavailable) as refused:
        await limiter.hit("k")
    assert refused.value.headers["Retry-After"] == "1"


def test_an_unknown_storage_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        RateLimiter("5/minute", storage="memcached://x")
