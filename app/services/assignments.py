"""Assignment: one code to one recipient, at most once, under any concurrency.

Unique sets: a claim takes one free code of the pool with ``FOR UPDATE SKIP LOCKED``
(concurrent claims skip each other's rows instead of queueing on them) and writes the
recipient on it, in the same statement as its audit row. Shared sets: a row in
``shared_assignments``."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import and_, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    AppError,
    Expired,
    NotFound,
    NotYetValid,
    PoolExhausted,
    SetArchived,
    sqlstate,
)
from app.models.api_key import ApiKey
from app.models.assignment import AssignmentCreate, AssignmentPublic, SharedAssignment
from app.models.audit import AuditAction
from app.models.code import Code
from app.models.coupon_set import CouponSet, SetKind, SetStatus
from app.models.pool import DEFAULT_POOL, Pool, PoolStock
from app.pagination import PageParams, decode_id_cursor
from app.services import audit, pools
from app.services.codes import pool_stock
from app.services.coupon_sets import matches_ref, parse_id, set_not_found

# Per-process scan hint: the highest id this process claimed in each pool. Free codes
# are claimed in id order, so the next free one is almost always above it, and the
# index scan starts there instead of stepping over the entries of claimed rows that
# vacuum has not removed yet. A miss above the hint retries from the start, so codes
# freed below it are still found: the hint is only a shortcut, never a filter.
_scan_hint: dict[uuid.UUID, int] = {}

# One round trip: claim_code() (migration 0003) takes a transaction-scoped advisory lock
# on (pool, recipient), which serialises the first requests of one recipient and nothing
# else, so the second of two concurrent ones waits and then finds the first one's code.
# Otherwise it runs, once above the scan hint and once from the start if that misses:
#   picked: one free code, locked; SKIP LOCKED passes rows that other claims hold, and
#     MATERIALIZED with the join on "=" keeps it to exactly one row (an IN (subquery)
#     can lock more: PostgreSQL bug #15715); the partial index ix_codes_free holds only
#     free codes, in claim order;
#   claimed: the code, now assigned; audited: its audit row, in the same statement.
_CLAIM = text(
    "SELECT * FROM claim_code(:set_id, :pool_id, :pool_name, :rid, :address, :channel, "
    ":delivery_id, :additional, :api_key_id, :idempotency_key, :after)"
)
_CLAIM_PLAIN = "SELECT * FROM claim_code($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)"

# The fast path's lookup of a set (by id, or by key) and its pool, for plain asyncpg.
_SET_AND_POOL_PLAIN = """
    SELECT s.id, s.key, s.kind, s.status, s.valid_from, s.valid_until, p.id AS pool_id,
           p.name AS pool_name
    FROM coupon_sets s
    LEFT JOIN pools p ON p.set_id = s.id AND lower(p.name) = lower($2)
    WHERE {match}
"""
_BY_ID = _SET_AND_POOL_PLAIN.format(match="s.id = $1::uuid")
_BY_KEY = _SET_AND_POOL_PLAIN.format(match="lower(s.key) = lower($1)")


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


def ensure_usable(coupon_set: CouponSet, *, at: datetime | None = None) -> None:
    """Refuse an archived set, or a moment outside its validity window."""
    moment = at or datetime.now(UTC)
    if coupon_set.status == SetStatus.archived:
        raise SetArchived(f"The set '{coupon_set.key}' is archived.")
    if coupon_set.valid_from is not None and moment < coupon_set.valid_from:
        raise NotYetValid(
            f"The set '{coupon_set.key}' is valid from {coupon_set.valid_from.isoformat()}.",
            valid_from=coupon_set.valid_from.isoformat(),
        )
    if coupon_set.valid_until is not None and moment >= coupon_set.valid_until:
        raise Expired(
            f"The set '{coupon_set.key}' was valid until {coupon_set.valid_until.isoformat()}.",
            valid_until=coupon_set.valid_until.isoformat(),
        )


def _public(
    coupon_set: CouponSet, row: Any, *, code: str, pool: str | None, recipient_id: str
) -> AssignmentPublic:
    """``row``: a code row, a shared assignment or a claim's result row."""
    return AssignmentPublic(
        code=code,
        set_id=coupon_set.id,
        set_key=coupon_set.key,
        pool=pool,
        recipient_id=recipient_id,
        address=row.address,
        channel=row.channel,
        delivery_id=row.delivery_id,
        additional=row.additional,
        assigned_at=row.assigned_at,
    )


async def _set_and_pool(
    session: AsyncSession, set_ref: str, pool_name: str
) -> tuple[CouponSet, Pool | None]:
    """The set and its pool of that name, in one query (the hot path)."""
    stmt = (
        select(CouponSet, Pool)
        .outerjoin(
            Pool, and_(Pool.set_id == CouponSet.id, func.lower(Pool.name) == pool_name.lower())
        )
        .where(matches_ref(set_ref))
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        raise set_not_found(set_ref)
    return row[0], row[1]


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


# A batch's answers besides a claim's row or None (no code left for it):
_CLAIM_SINGLY = object()  # claim alone (see ClaimCoalescer._run_batch)
_UNUSABLE = object()  # the set refused the claim (archived, outside its validity)
# One call claims for all of a batch: claim_codes() (migration 0006).
_CLAIM_MANY = "SELECT * FROM claim_codes($1, $2, $3, $4, $5, $6, $7, $8, $9)"


class _Target(NamedTuple):
    """The set and pool a claim is for, built once per lookup (shared by a batch)."""

    coupon_set: CouponSet
    pool_id: uuid.UUID
    pool_name: str


async def _lookup(connection: asyncpg.Connection, set_ref: str, pool_name: str) -> _Target | None:
    """The set and pool of a claim, or None when this is not the fast path's case (an
    unknown set or pool, a shared set)."""
    set_id = parse_id(set_ref)
    found = await connection.fetchrow(_BY_ID if set_id else _BY_KEY, set_id or set_ref, pool_name)
    if found is None or found["kind"] != SetKind.unique or found["pool_id"] is None:
        return None
    coupon_set = CouponSet(
        id=found["id"],
        key=found["key"],
        kind=found["kind"],
        status=found["status"],
        valid_from=found["valid_from"],
        valid_until=found["valid_until"],
    )
    return _Target(coupon_set, found["pool_id"], found["pool_name"])


class ClaimCoalescer:
    """Coalesces the concurrent claims of one pool: while a batch of the pool is in
    flight, new requests wait in the pool's queue; when it returns, the next batch
    serves all of them on one connection with one lookup of the set and pool and one
    ``claim_codes()`` call (one statement, so one transaction and one commit). A
    request arriving at an idle pool is sent at once, so this adds no wait without
    load, and every request is served by a lookup that started after it arrived. The
    statement takes the recipients' advisory locks in sorted order (no deadlock between
    batches), gives held codes back, and pairs the others with free codes taken
    ``FOR UPDATE SKIP LOCKED`` by row number: the same guarantees as ``claim_code()``,
    for many recipients. A recipient repeated in a batch waits for the next one;
    ``additional`` claims are not coalesced. When a delivery's confirm races the
    statement for one of its recipients, the batch's requests claim one by one
    instead; any other failure fails every request of its batch with that error."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 64, max_in_flight: int = 1) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        # By the set reference and pool name as the requests spell them: the requests
        # waiting, and how many batches are in flight.
        self._queues: dict[tuple[str, str], list[_Claim]] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(
        self, *, set_ref: str, pool_name: str, data: AssignmentCreate, actor: ApiKey
    ) -> tuple[_Target | None, Any]:
        """The set and pool found (None: not the fast path's case) and the claim's row
        (its ``created`` says whether it is new), None when the pool had no code for
        it, ``_UNUSABLE`` or ``_CLAIM_SINGLY``."""
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
        async with self._pool.acquire() as connection, _discarded_if_broken(connection):
            found = await _lookup(connection, set_ref, pool_name)
            if found is None:
                return [(None, None)] * len(batch)
            try:
                ensure_usable(found.coupon_set)
            except AppError:
                return [(found, _UNUSABLE)] * len(batch)
            pool_id = found.pool_id
            try:
                rows = await connection.fetch(
                    _CLAIM_MANY,
                    found.coupon_set.id,
                    pool_id,
                    found.pool_name,
                    [c.recipient_id for c in batch],
                    [c.address for c in batch],
                    [c.channel for c in batch],
                    [c.delivery_id for c in batch],
                    [c.api_key_id for c in batch],
                    _scan_hint.get(pool_id, 0),
                )
            except (
                asyncpg.UniqueViolationError,
                asyncpg.LockNotAvailableError,
                asyncpg.DeadlockDetectedError,
            ):
                # A delivery's confirm is giving one of them a code: the statement hit
                # its entry in uq_codes_recipient, or gave up waiting for it (migration
                # 0006). Each claims alone then, and finds that code or waits for it.
                return [(found, _CLAIM_SINGLY)] * len(batch)
        by_ord = {row["ord"]: row for row in rows}
        created = [row["id"] for row in rows if row["created"]]
        if created:
            _scan_hint[pool_id] = max(_scan_hint.get(pool_id, 0), *created)
        return [(found, by_ord.get(n)) for n in range(1, len(batch) + 1)]


async def _claim_single(
    connection: asyncpg.Connection, found: _Target, data: AssignmentCreate, actor: ApiKey
) -> Any:
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
        return await connection.fetchrow(_CLAIM_PLAIN, *args, _scan_hint.get(args[1], 0))
    except asyncpg.UniqueViolationError:
        # A delivery's confirm gave this recipient a code of the pool meanwhile (it
        # does not take the recipient lock): the claim, run again, finds that code.
        return await connection.fetchrow(_CLAIM_PLAIN, *args, _scan_hint.get(args[1], 0))


async def assign_autocommit(
    pool: asyncpg.Pool,
    *,
    set_ref: str,
    data: AssignmentCreate,
    actor: ApiKey,
    coalescer: ClaimCoalescer | None = None,
) -> tuple[AssignmentPublic, bool] | None:
    """The common case in two round trips on a plain connection, without a transaction
    of its own: ``claim_code()`` is one statement, so it commits alone and atomically.
    With a ``coalescer`` the lookup and the claim join the pool's next batch instead.
    None when this is not the common case (a shared set, an empty pool, an unknown
    set or pool): the caller then takes the transactional path, which explains it."""
    pool_name = data.pool or DEFAULT_POOL
    row: Any
    if coalescer is not None and not data.additional:
        found, row = await coalescer.claim(
            set_ref=set_ref, pool_name=pool_name, data=data, actor=actor
        )
        if found is None:
            return None
        if row is _UNUSABLE:
            ensure_usable(found.coupon_set)  # raises the refusal, unless it just ended
            return None
        if row is _CLAIM_SINGLY:
            async with pool.acquire() as connection, _discarded_if_broken(connection):
                row = await _claim_single(connection, found, data, actor)
    else:
        async with pool.acquire() as connection, _discarded_if_broken(connection):
            found = await _lookup(connection, set_ref, pool_name)
            if found is None:
                return None
            ensure_usable(found.coupon_set)
            row = await _claim_single(connection, found, data, actor)
    if row is None:
        return None
    claimed = SimpleNamespace(**row)
    if claimed.created:
        _scan_hint[found.pool_id] = max(_scan_hint.get(found.pool_id, 0), claimed.id)
    public = _public(
        found.coupon_set,
        claimed,
        code=claimed.code,
        pool=found.pool_name,
        recipient_id=data.recipient_id,
    )
    return public, bool(claimed.created)


async def _claim_in_savepoint(session: AsyncSession, params: dict[str, Any]) -> Any:
    """The claim, run again if a delivery's confirm gave the recipient a code meanwhile
    (see ``assign_autocommit``); the savepoint keeps the transaction usable."""
    for attempt in (1, 2):
        try:
            async with session.begin_nested():
                return (await session.execute(_CLAIM, params)).first()
        except IntegrityError as exc:
            if sqlstate(exc) != "23505" or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def assign(
    session: AsyncSession,
    *,
    set_ref: str,
    data: AssignmentCreate,
    actor: ApiKey,
    idempotency_key: str | None,
    plain_pool: asyncpg.Pool | None = None,
    coalescer: ClaimCoalescer | None = None,
) -> tuple[AssignmentPublic, bool]:
    """The recipient's code and whether it is new (False: they held it already).

    With ``plain_pool`` the common case takes the autocommit fast path; a request with
    an Idempotency-Key never does, because its stored response must commit in the same
    transaction as the claim."""
    if plain_pool is not None and idempotency_key is None:
        fast = await assign_autocommit(
            plain_pool, set_ref=set_ref, data=data, actor=actor, coalescer=coalescer
        )
        if fast is not None:
            return fast
    coupon_set, pool = await _set_and_pool(session, set_ref, data.pool or DEFAULT_POOL)
    ensure_usable(coupon_set)
    if coupon_set.kind == SetKind.shared:
        return await _assign_shared(
            session, coupon_set=coupon_set, data=data, actor=actor, idempotency_key=idempotency_key
        )
    if pool is None:
        raise NotFound(f"The set '{coupon_set.key}' has no pool '{data.pool}'.")
    params = {
        "pool_id": pool.id,
        "pool_name": pool.name,
        "set_id": coupon_set.id,
        "rid": data.recipient_id,
        "address": data.address,
        "channel": data.channel.value if data.channel else None,
        "delivery_id": data.delivery_id,
        "additional": data.additional,
        "api_key_id": actor.id,
        "idempotency_key": idempotency_key,
    }
    row = await _claim_in_savepoint(session, {**params, "after": _scan_hint.get(pool.id, 0)})
    if row is not None:
        if row.created:
            _scan_hint[pool.id] = max(_scan_hint.get(pool.id, 0), row.id)
        public = _public(
            coupon_set, row, code=row.code, pool=pool.name, recipient_id=data.recipient_id
        )
        return public, bool(row.created)
    if coupon_set.fallback_code is not None:
        await audit.record(
            session,
            action=AuditAction.assign,
            actor=actor,
            set_id=coupon_set.id,
            code=coupon_set.fallback_code,
            recipient_id=data.recipient_id,
            idempotency_key=idempotency_key,
            details={"pool": pool.name, "fallback": True},
        )
        fallback = AssignmentPublic(
            **data.model_dump(exclude={"pool"}),
            code=coupon_set.fallback_code,
            set_id=coupon_set.id,
            set_key=coupon_set.key,
            pool=pool.name,
            assigned_at=datetime.now(UTC),
            fallback=True,
        )
        return fallback, True
    stock = await pool_stock(session, set_id=coupon_set.id, pool_id=pool.id)
    raise PoolExhausted(
        f"The pool '{pool.name}' of the set '{coupon_set.key}' has no code left. Add codes, "
        "or give the set a fallback_code.",
        pool=pool.name,
        counts=PoolStock(**stock.get(pool.id, {})).model_dump(),
    )


async def _assign_shared(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    data: AssignmentCreate,
    actor: ApiKey,
    idempotency_key: str | None,
) -> tuple[AssignmentPublic, bool]:
    assert coupon_set.shared_code is not None
    if data.pool is not None:
        await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool)  # refuses
    values = {
        "set_id": coupon_set.id,
        "recipient_id": data.recipient_id,
        "address": data.address,
        "channel": data.channel.value if data.channel else None,
        "delivery_id": data.delivery_id,
        "additional": data.additional,
    }
    stmt = insert(SharedAssignment).values(**values)
    if not data.additional:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[SharedAssignment.set_id, SharedAssignment.recipient_id],
            index_where=~SharedAssignment.additional,
        )
    inserted = (await session.execute(stmt.returning(SharedAssignment))).scalar_one_or_none()
    row = (
        inserted
        or (
            await session.execute(
                select(SharedAssignment).where(
                    SharedAssignment.set_id == coupon_set.id,
                    SharedAssignment.recipient_id == data.recipient_id,
                    ~SharedAssignment.additional,
                )
            )
        ).scalar_one()
    )
    if inserted is not None:
        await audit.record(
            session,
            action=AuditAction.assign,
            actor=actor,
            set_id=coupon_set.id,
            code=coupon_set.shared_code,
            recipient_id=data.recipient_id,
            idempotency_key=idempotency_key,
            details={"delivery_id": data.delivery_id},
        )
    public = _public(
        coupon_set, row, code=coupon_set.shared_code, pool=None, recipient_id=row.recipient_id
    )
    return public, inserted is not None


async def list_assignments(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    recipient_id: str | None,
    pool: str | None,
    delivery_id: str | None,
    params: PageParams,
) -> tuple[list[AssignmentPublic], list[int]]:
    """Assignments in the order they were recorded, and their row ids (for the cursor)."""
    after = decode_id_cursor(params.cursor) if params.cursor else 0
    if coupon_set.kind == SetKind.shared:
        stmt = select(SharedAssignment).where(
            SharedAssignment.set_id == coupon_set.id, SharedAssignment.id > after
        )
        if recipient_id is not None:
            stmt = stmt.where(SharedAssignment.recipient_id == recipient_id)
        if delivery_id is not None:
            stmt = stmt.where(SharedAssignment.delivery_id == delivery_id)
        shared = (
            (await session.execute(stmt.order_by(SharedAssignment.id).limit(params.limit + 1)))
            .scalars()
            .all()
        )
        code = coupon_set.shared_code or ""
        return [
            _public(coupon_set, r, code=code, pool=None, recipient_id=r.recipient_id)
            for r in shared
        ], [r.id for r in shared]
    codes = (
        select(Code, Pool.name)
        .join(Pool, Pool.id == Code.pool_id)
        .where(Code.set_id == coupon_set.id, Code.recipient_id.is_not(None), Code.id > after)
    )
    if recipient_id is not None:
        codes = codes.where(Code.recipient_id == recipient_id)
    if delivery_id is not None:
        codes = codes.where(Code.delivery_id == delivery_id)
    if pool is not None:
        found = await pools.get_pool(session, coupon_set=coupon_set, ref=pool)
        codes = codes.where(Code.pool_id == found.id)
    rows = (await session.execute(codes.order_by(Code.id).limit(params.limit + 1))).all()
    return [
        _public(coupon_set, row, code=row.code, pool=name, recipient_id=row.recipient_id or "")
        for row, name in rows
    ], [row.id for row, _ in rows]
