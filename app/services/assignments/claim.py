"""The claim on the plain asyncpg pool: the common assignment (a unique set, no
Idempotency-Key) in two round trips, or in a coalesced batch under load.

This module takes plain connections from the asyncpg pool and opens no transaction:
``claim_code()`` and ``claim_codes()`` are single statements, each its own atomic
transaction. ``Claimer``, created at start-up, is the one entrance: the route and the
lean path each call ``Claimer.claim`` at most once per request (see ``service.assign``)."""

import asyncio
import enum
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Annotated, Any, NamedTuple

import asyncpg
from fastapi import Depends, Request

from app.models.api_key import ApiKey
from app.models.coupon_set import SetFacts, SetKind
from app.models.pool import DEFAULT_POOL
from app.schemas.assignment import AssignmentCreate, AssignmentPublic
from app.schemas.mappers import assignment_public
from app.services.assignments import sql
from app.services.assignments.rules import ensure_usable
from app.services.coupon_sets import parse_id


class ScanHint:
    """Per pool, the highest code id this process claimed. Free codes are claimed in id
    order, so the next free one is almost always above it, and the index scan starts
    there instead of stepping over the entries of claimed rows that vacuum has not
    removed yet. A miss above the hint retries from the start (in the SQL functions),
    so codes freed below it are still found: the hint is a shortcut, never a filter."""

    __slots__ = ("_top",)

    def __init__(self) -> None:
        self._top: dict[uuid.UUID, int] = {}

    def after(self, pool_id: uuid.UUID) -> int:
        return self._top.get(pool_id, 0)

    def advance(self, pool_id: uuid.UUID, claimed_id: int) -> None:
        if claimed_id > self._top.get(pool_id, 0):
            self._top[pool_id] = claimed_id


class Assigned(NamedTuple):
    """A recipient's code, and whether it is new (False: they held it already)."""

    assignment: AssignmentPublic
    created: bool


class Miss(enum.Enum):
    """Why a plain claim gave no code; the transactional path answers then."""

    # Not the plain case (a shared set, an unknown set or pool, a refusal): nothing
    # was claimed, so the transactional path claims if there is anything to claim.
    skipped = "skipped"
    # A claim found no free code: the answer is the fallback code or pool-exhausted,
    # and the transactional path does not claim again.
    empty = "empty"


Outcome = Assigned | Miss


class _Target(NamedTuple):
    """The set and pool a claim is for, built once per lookup (shared by a batch)."""

    coupon_set: SetFacts
    pool_id: uuid.UUID
    pool_name: str


@asynccontextmanager
async def _discarded_if_broken(connection: asyncpg.Connection) -> AsyncIterator[None]:
    """A connection that broke under a query (the server went away) can be left in a
    state that fails the next user; close it instead of returning it to the pool."""
    try:
        yield
    except (
        OSError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
    ):
        connection.terminate()
        raise


async def _lookup(connection: asyncpg.Connection, set_ref: str, pool_name: str) -> _Target | None:
    """The set and pool of a claim, or None when this is not the plain case (an unknown
    set or pool, a shared set)."""
    set_id = parse_id(set_ref)
    found = await connection.fetchrow(
        sql.SET_AND_POOL_BY_ID if set_id else sql.SET_AND_POOL_BY_KEY, set_id or set_ref, pool_name
    )
    if found is None or found["kind"] != SetKind.unique or found["pool_id"] is None:
        return None
    coupon_set = SetFacts(*(found[name] for name in sql.SET_COLUMNS))
    return _Target(coupon_set, found["pool_id"], found["pool_name"])


class _Claim:
    """One request's place in a coalesced batch: its arguments and its answer."""

    __slots__ = ("address", "api_key_id", "channel", "delivery_id", "future", "recipient_id")

    def __init__(self, data: AssignmentCreate, actor: ApiKey) -> None:
        self.recipient_id = data.recipient_id
        self.address = data.address
        self.channel = data.channel.value if data.channel else None
        self.delivery_id = data.delivery_id
        self.api_key_id = actor.id
        self.future: asyncio.Future[tuple[_Target | None, Any]] = (
            asyncio.get_running_loop().create_future()
        )


# At most this many (set reference, pool name) spellings remembered for the scan hint.
MAX_SPELLINGS = 4096


# A batch's answers besides a claim's row or None (no code left for it):
_CLAIM_SINGLY = object()  # claim alone (see ClaimCoalescer._execute)
_UNUSABLE = object()  # the set refused the claim (archived, outside its validity)


class ClaimCoalescer:
    """Coalesces the concurrent claims of one pool: while a batch of the pool is in
    flight, new requests wait in the pool's queue; when it returns, the next batch
    serves all of them in one statement: the lookup of the set and pool, its check and
    one ``claim_codes()`` call (so one round trip, transaction and commit). A
    request arriving at an idle pool is sent at once, so this adds no wait without
    load, and every request is served by a lookup that started after it arrived. The
    statement takes the recipients' advisory locks in sorted order (no deadlock between
    batches), gives held codes back, and pairs the others with free codes taken
    ``FOR UPDATE SKIP LOCKED`` by row number: the same guarantees as ``claim_code()``,
    for many recipients. A recipient repeated in a batch waits for the next one;
    ``additional`` claims are not coalesced. When a delivery's confirm races the
    statement for one of its recipients, the batch's requests claim one by one
    instead; any other failure fails every request of its batch with that error."""

    def __init__(
        self, pool: asyncpg.Pool, hint: ScanHint, *, max_batch: int = 64, max_in_flight: int = 1
    ) -> None:
        self._pool = pool
        self._hint = hint
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        # By the set reference and pool name as the requests spell them: the requests
        # waiting, and how many batches are in flight.
        self._queues: dict[tuple[str, str], list[_Claim]] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The pool that a (set reference, pool name) as requests spell it was found to
        # be, for its scan hint: the batch's statement finds the pool itself.
        self._pool_ids: dict[tuple[str, str], uuid.UUID] = {}

    async def claim(
        self, *, set_ref: str, pool_name: str, data: AssignmentCreate, actor: ApiKey
    ) -> tuple[_Target | None, Any]:
        """The set and pool found (None: not the plain case) and the claim's row (its
        ``created`` says whether it is new), None when the pool had no code for it,
        ``_UNUSABLE`` or ``_CLAIM_SINGLY``."""
        claim = _Claim(data, actor)
        key = (set_ref, pool_name)
        self._queues.setdefault(key, []).append(claim)
        running = self._running.get(key, 0)
        if running < self._max_in_flight:
            # Otherwise a batch in flight takes it next, when it returns.
            self._running[key] = running + 1
            task = asyncio.create_task(self._drain(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await claim.future

    async def _drain(self, key: tuple[str, str]) -> None:
        queue = self._queues[key]
        try:
            while queue:
                batch: list[_Claim] = []
                later: list[_Claim] = []
                seen: set[str] = set()
                for claim in queue:
                    if claim.future.done():
                        continue  # its request was cancelled
                    if claim.recipient_id in seen or len(batch) >= self._max_batch:
                        later.append(claim)
                    else:
                        seen.add(claim.recipient_id)
                        batch.append(claim)
                queue[:] = later
                if batch:
                    await self._run_batch(key, batch)
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key], self._queues[key]
                for claim in queue:  # only if this task itself was cancelled (shutdown)
                    if not claim.future.done():
                        claim.future.set_result((None, None))  # the transactional path

    async def _run_batch(self, key: tuple[str, str], batch: list[_Claim]) -> None:
        try:
            answers = await self._execute(*key, batch)
        except BaseException as exc:
            for claim in batch:
                if not claim.future.done():
                    claim.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for claim, answer in zip(batch, answers, strict=True):
            if not claim.future.done():
                claim.future.set_result(answer)

    async def _execute(
        self, set_ref: str, pool_name: str, batch: list[_Claim]
    ) -> list[tuple[_Target | None, Any]]:
        # The hint of the pool these spellings named last time (a stale one only costs
        # the claim a second look from the start of the pool).
        pool_id = self._pool_ids.get((set_ref, pool_name))
        async with self._pool.acquire() as connection, _discarded_if_broken(connection):
            try:
                rows = await self._claim_many(
                    connection,
                    set_ref,
                    pool_name,
                    batch,
                    self._hint.after(pool_id) if pool_id else 0,
                )
            except (
                asyncpg.UniqueViolationError,
                asyncpg.LockNotAvailableError,
                asyncpg.DeadlockDetectedError,
            ):
                # A delivery's confirm is giving one of them a code: the statement hit
                # its entry in uq_codes_recipient, or gave up waiting for it (see
                # claim_codes.sql). Each claims alone then, and finds that code or
                # waits for it.
                return [(await _lookup(connection, set_ref, pool_name), _CLAIM_SINGLY)] * len(batch)
        if not rows:
            return [(None, None)] * len(batch)  # no such set
        first = rows[0]
        if first["kind"] != SetKind.unique or first["pool_id"] is None:
            return [(None, None)] * len(batch)  # not the plain case
        found = _Target(
            SetFacts(*(first[name] for name in sql.SET_COLUMNS)),
            first["pool_id"],
            first["pool_name"],
        )
        if not first["usable"]:
            return [(found, _UNUSABLE)] * len(batch)
        self._remember_pool(set_ref, pool_name, found.pool_id)
        # Before the next batch reads the hint (it starts before these requests resume).
        created = [row["code_id"] for row in rows if row["created"]]
        if created:
            self._hint.advance(found.pool_id, max(created))
        # Each row carries its claim under claim_code()'s names (the code's id as code_id).
        by_ord = {row["ord"]: row for row in rows if row["ord"] is not None}
        return [(found, by_ord.get(n)) for n in range(1, len(batch) + 1)]

    @staticmethod
    async def _claim_many(
        connection: asyncpg.Connection,
        set_ref: str,
        pool_name: str,
        batch: list[_Claim],
        after: int,
    ) -> list[asyncpg.Record]:
        """The batch's one statement: the set and pool, and the claims if it may claim."""
        set_id = parse_id(set_ref)
        rows: list[asyncpg.Record] = await connection.fetch(
            sql.CLAIM_BATCH_BY_ID if set_id else sql.CLAIM_BATCH_BY_KEY,
            set_id or set_ref,
            pool_name,
            [c.recipient_id for c in batch],
            [c.address for c in batch],
            [c.channel for c in batch],
            [c.delivery_id for c in batch],
            [c.api_key_id for c in batch],
            after,
        )
        return rows

    def _remember_pool(self, set_ref: str, pool_name: str, pool_id: uuid.UUID) -> None:
        if len(self._pool_ids) >= MAX_SPELLINGS:
            self._pool_ids.clear()  # spellings are many only if clients vary them
        self._pool_ids[(set_ref, pool_name)] = pool_id


class Claimer:
    """The claims of this process, created at start-up: the plain pool, the scan hint
    (which the transactional path uses too) and, when claims are coalesced
    (``COUPONS_COALESCE_CLAIMS``), the coalescer."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        coalesce: bool = True,
        max_in_flight: int = 1,
        max_batch: int = 64,
    ) -> None:
        self._pool = pool
        self.hint = ScanHint()
        self._coalescer = (
            ClaimCoalescer(pool, self.hint, max_batch=max_batch, max_in_flight=max_in_flight)
            if coalesce
            else None
        )

    async def claim(self, *, set_ref: str, data: AssignmentCreate, actor: ApiKey) -> Outcome:
        """The common case on a plain connection, without a transaction of its own:
        ``claim_code()`` is one statement, so it commits alone and atomically; with the
        coalescer the lookup and the claim join the pool's next batch instead. Raises
        the set's refusal (archived, outside its validity window)."""
        pool_name = data.pool or DEFAULT_POOL
        row: Any
        if self._coalescer is not None and not data.additional:
            found, row = await self._coalescer.claim(
                set_ref=set_ref, pool_name=pool_name, data=data, actor=actor
            )
            if found is None:
                return Miss.skipped
            if row is _UNUSABLE:
                ensure_usable(found.coupon_set)  # raises the refusal, unless it just ended
                return Miss.skipped
            if row is _CLAIM_SINGLY:
                async with self._pool.acquire() as connection, _discarded_if_broken(connection):
                    row = await self._claim_one(connection, found, data, actor)
        else:
            async with self._pool.acquire() as connection, _discarded_if_broken(connection):
                found = await _lookup(connection, set_ref, pool_name)
                if found is None:
                    return Miss.skipped
                ensure_usable(found.coupon_set)
                row = await self._claim_one(connection, found, data, actor)
        if row is None:
            return Miss.empty
        claimed = SimpleNamespace(**row)
        assignment = assignment_public(
            found.coupon_set,
            claimed,
            code=claimed.code,
            pool=found.pool_name,
            recipient_id=data.recipient_id,
        )
        return Assigned(assignment, bool(claimed.created))

    async def _claim_one(
        self, connection: asyncpg.Connection, found: _Target, data: AssignmentCreate, actor: ApiKey
    ) -> asyncpg.Record | None:
        args = (
            found.coupon_set.id,
            found.pool_id,
            found.pool_name,
            data.recipient_id,
            data.address,
            data.channel.value if data.channel else None,
            data.delivery_id,
            data.additional,
            actor.id,
        )
        try:
            row = await connection.fetchrow(sql.CLAIM_ONE, *args, self.hint.after(found.pool_id))
        except asyncpg.UniqueViolationError:
            # A delivery's confirm gave this recipient a code of the pool meanwhile (it
            # does not take the recipient lock): the claim, run again, finds that code.
            row = await connection.fetchrow(sql.CLAIM_ONE, *args, self.hint.after(found.pool_id))
        if row is not None and row["created"]:
            self.hint.advance(found.pool_id, row["id"])
        return row


async def _claimer(request: Request) -> Claimer:
    claimer: Claimer = request.app.state.claimer
    return claimer


Claims = Annotated[Claimer, Depends(_claimer)]
