"""The Batcher: requests that arrive while a batch runs go together in the next one,
each gets its own answer, and one item's failure stays that item's."""

import asyncio

import pytest

from app.services.redemptions.engine.batches import Batcher


async def test_requests_arriving_meanwhile_share_the_next_batch() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=4)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)  # the first is sent at once, alone
    rest = [asyncio.create_task(batcher.submit(n)) for n in range(1, 7)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 0
    assert [await task for task in rest] == [10, 20, 30, 40, 50, 60]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]


async def test_a_failing_batch_is_run_again_item_by_item() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        if 3 in items:
            raise ValueError("three")
        return items

    batcher: Batcher[int, int] = Batcher(run)
    gate = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(n)) for n in (1, 2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await gate == 0
    results = await asyncio.gather(*others, return_exceptions=True)
    assert results[:2] == [1, 2]
    assert results[3] == 4
    assert isinstance(results[2], ValueError)
    assert batches == [[0], [1, 2, 3, 4], [1], [2], [3], [4]]


async def test_a_cancelled_request_is_left_out() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(run)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batcher.submit(1))
    kept = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert (await first, await kept) == (0, 2)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batches == [[0], [2]]
