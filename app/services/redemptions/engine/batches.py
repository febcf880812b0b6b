"""Concurrent requests answered together: one statement (so one transaction, one commit
and one round trip) for all the requests that arrived while the previous batch ran.

Generic: a ``Batcher`` knows only how to run a list of items; the redemption engine
gives it redeem_codes() and validate_codes(). A request arriving while nothing runs is
sent at once (no added wait without load); one batch is in flight at a time, and the
next takes everything that queued meanwhile (up to ``max_batch``). A batch that fails
is run again item by item, so one request's error (text PostgreSQL cannot store, say)
is that request's alone."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(
        self, run: Callable[[list[Item]], Awaitable[list[Result]]], *, max_batch: int = 64
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [w for w in self._waiting[: self._max_batch] if not w[1].done()]
                del self._waiting[: self._max_batch]
                if batch:
                    await self._answer(batch)
        finally:
            self._task = None
            for _, future in self._waiting:  # only if this task was cancelled (shutdown)
                future.cancel()
            self._waiting.clear()

    async def _answer(self, batch: list[tuple[Item, "asyncio.Future[Result]"]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for one in batch:  # each on its own: the failure is one item's, or all's
                await self._answer([one])
            return
        except BaseException:  # cancelled: shutdown
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _settle(future: "asyncio.Future[Result]", exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
