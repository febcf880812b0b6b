"""The redemption engine's database side: the statements of engine/sql.py run on a given
asyncpg connection, and ``RedemptionEngine``, the process's way to run them on the plain
asyncpg pool (one of the named modules that take plain connections).

On the plain pool each statement is its own transaction (autocommit): redeem_codes() and
settle_redemption() write everything of a request, audit row included, in that one
statement, so it commits atomically. Concurrent redemptions, and concurrent validations,
are batched (engine/batches.py): one statement for all the requests that arrived while
the previous one ran. The request's own transaction (an Idempotency-Key, whose stored
response must commit with the effect; an import of redemptions) runs the same
statements on the session's connection instead."""

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, NamedTuple

import asyncpg
from fastapi import Depends, Request

from app.services.redemptions.engine import sql
from app.services.redemptions.engine.batches import Batcher

# redeem_codes() did not try this request: another transaction held its code or its
# set's counter, and a batch waits for one lock only. Alone, the request waits for it.
BUSY = "busy"
# How long a coalesced batch waits for its lock (another batch holds it for a few ms):
# a lock held longer (an import's transaction) would hold up every request queued
# behind the batch, so its requests go on alone instead ('busy').
BATCH_LOCK_WAIT_MS = 200


class Attempt(NamedTuple):
    """One redemption's arguments, in the order of redeem_codes()'s arrays."""

    exact: str
    loose: str
    set_ref: str | None
    recipient_id: str | None
    order_id: str | None
    amount: Decimal | None
    redeemed_at: dt.datetime | None
    hold_seconds: int | None
    api_key_id: uuid.UUID | None
    idempotency_key: str | None


class Check(NamedTuple):
    """One validation's arguments, in the order of validate_codes()'s arrays."""

    exact: str
    loose: str
    set_ref: str | None
    recipient_id: str | None
    redeemed_at: dt.datetime | None


def _columns(rows: Sequence[tuple[object, ...]]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def redeem_on(
    connection: asyncpg.Connection,
    attempts: Sequence[Attempt],
    lock_wait_ms: int | None = None,
) -> list[asyncpg.Record]:
    """One row per attempt, in their order."""
    rows = await connection.fetch(sql.REDEEM, *_columns(attempts), lock_wait_ms)
    return sorted(rows, key=lambda row: int(row["ord"]))


async def validate_on(
    connection: asyncpg.Connection, checks: Sequence[Check]
) -> list[asyncpg.Record]:
    rows = await connection.fetch(sql.VALIDATE, *_columns(checks))
    return sorted(rows, key=lambda row: int(row["ord"]))


async def settle_on(
    connection: asyncpg.Connection,
    redemption_id: uuid.UUID,
    action: str,
    api_key_id: uuid.UUID | None,
    idempotency_key: str | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        sql.SETTLE, redemption_id, action, api_key_id, idempotency_key
    )
    return row


class RedemptionEngine:
    """Created once per process at start-up, on the plain asyncpg pool. With
    ``coalesce``, concurrent redemptions (and validations) share one statement. A
    connection not free within ``acquire_timeout`` seconds fails the request with a
    ``TimeoutError`` (a 503, as the session's pool timeout)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        coalesce: bool = True,
        max_batch: int = 64,
        acquire_timeout: float | None = None,
    ) -> None:
        self.pool = pool
        self._timeout = acquire_timeout
        self._redeems = Batcher(self._coalesced, max_batch=max_batch) if coalesce else None
        self._checks = Batcher(self._validate_batch, max_batch=max_batch) if coalesce else None

    async def _redeem_batch(
        self, attempts: list[Attempt], lock_wait_ms: int | None
    ) -> list[asyncpg.Record]:
        async with self.pool.acquire(timeout=self._timeout) as connection:
            return await redeem_on(connection, attempts, lock_wait_ms)

    async def _coalesced(self, attempts: list[Attempt]) -> list[asyncpg.Record]:
        return await self._redeem_batch(attempts, BATCH_LOCK_WAIT_MS)

    async def _validate_batch(self, checks: list[Check]) -> list[asyncpg.Record]:
        async with self.pool.acquire(timeout=self._timeout) as connection:
            return await validate_on(connection, checks)

    async def redeem(self, attempt: Attempt) -> asyncpg.Record:
        if self._redeems is not None:
            row = await self._redeems.submit(attempt)
            if row["refusal"] != BUSY:
                return row
        # Alone, outside the queue: it waits for its lock, holding up no one.
        return (await self._redeem_batch([attempt], None))[0]

    async def validate(self, check: Check) -> asyncpg.Record:
        if self._checks is None:
            return (await self._validate_batch([check]))[0]
        return await self._checks.submit(check)

    async def settle(
        self,
        redemption_id: uuid.UUID,
        action: str,
        api_key_id: uuid.UUID | None,
        idempotency_key: str | None,
    ) -> asyncpg.Record:
        async with self.pool.acquire(timeout=self._timeout) as connection:
            return await settle_on(connection, redemption_id, action, api_key_id, idempotency_key)

    async def get(self, redemption_id: uuid.UUID) -> asyncpg.Record | None:
        async with self.pool.acquire(timeout=self._timeout) as connection:
            row: asyncpg.Record | None = await connection.fetchrow(sql.GET, redemption_id)
            return row


async def _engine(request: Request) -> RedemptionEngine:
    engine: RedemptionEngine = request.app.state.redemptions
    return engine


Engine = Annotated[RedemptionEngine, Depends(_engine)]
