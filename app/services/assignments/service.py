"""Assignment: one code to one recipient, at most once, under any concurrency.

Unique sets: a claim takes one free code of the pool with ``FOR UPDATE SKIP LOCKED``
(concurrent claims skip each other's rows instead of queueing on them) and writes the
recipient on it, in the same statement as its audit row. Shared sets: a row in
``shared_assignments``. A request claims once at most: on the plain pool (``claim``)
when it can, otherwise in the request's session."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db_errors import sqlstate
from app.errors import NotFound, PoolExhausted
from app.models.api_key import ApiKey
from app.models.assignment import SharedAssignment
from app.models.audit import AuditAction
from app.models.code import Code
from app.models.coupon_set import CouponSet, SetKind
from app.models.pool import DEFAULT_POOL, Pool
from app.pagination import PageParams, decode_id_cursor
from app.schemas.assignment import AssignmentCreate, AssignmentPublic
from app.schemas.mappers import assignment_public
from app.schemas.pool import PoolStock
from app.services import audit, pools
from app.services.assignments import sql
from app.services.assignments.claim import Assigned, Claimer, Miss, Outcome, ScanHint
from app.services.assignments.rules import ensure_usable
from app.services.codes import pool_stock
from app.services.coupon_sets import matches_ref, set_not_found


async def assign(
    session: AsyncSession,
    *,
    claimer: Claimer,
    set_ref: str,
    data: AssignmentCreate,
    actor: ApiKey,
    idempotency_key: str | None,
    handed_over: Miss | None = None,
) -> Assigned:
    """The recipient's code and whether it is new (False: they held it already).

    The common case is claimed on the plain pool; a request with an Idempotency-Key
    never is, because its stored response must commit in the same transaction as the
    claim. ``handed_over``: the plain claim the lean path made already (it is not made
    again); with ``Miss.empty`` nothing is claimed here either."""
    outcome: Outcome | None = handed_over
    if outcome is None and idempotency_key is None:
        outcome = await claimer.claim(set_ref=set_ref, data=data, actor=actor)
    if isinstance(outcome, Assigned):
        return outcome
    coupon_set, pool = await _set_and_pool(session, set_ref, data.pool or DEFAULT_POOL)
    ensure_usable(coupon_set)
    if coupon_set.kind == SetKind.shared:
        return await _assign_shared(
            session, coupon_set=coupon_set, data=data, actor=actor, idempotency_key=idempotency_key
        )
    if pool is None:
        raise NotFound(f"The set '{coupon_set.key}' has no pool '{data.pool}'.")
    row = None
    if outcome is not Miss.empty:
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
        row = await _claim_in_savepoint(session, claimer.hint, params)
    if row is not None:
        assignment = assignment_public(
            coupon_set, row, code=row.code, pool=pool.name, recipient_id=data.recipient_id
        )
        return Assigned(assignment, bool(row.created))
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
        return Assigned(fallback, True)
    stock = await pool_stock(session, set_id=coupon_set.id, pool_id=pool.id)
    raise PoolExhausted(
        f"The pool '{pool.name}' of the set '{coupon_set.key}' has no code left. Add codes, "
        "or give the set a fallback_code.",
        pool=pool.name,
        counts=PoolStock(**stock.get(pool.id, {})).model_dump(),
    )


async def _set_and_pool(
    session: AsyncSession, set_ref: str, pool_name: str
) -> tuple[CouponSet, Pool | None]:
    """The set and its pool of that name, in one query."""
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


async def _claim_in_savepoint(session: AsyncSession, hint: ScanHint, params: dict[str, Any]) -> Any:
    """The claim in the request's transaction, run again if a delivery's confirm gave
    the recipient a code meanwhile (it does not take the recipient lock: the claim, run
    again, finds that code); the savepoint keeps the transaction usable."""
    for attempt in (1, 2):
        try:
            async with session.begin_nested():
                row = (
                    await session.execute(
                        sql.CLAIM, {**params, "after": hint.after(params["pool_id"])}
                    )
                ).first()
        except IntegrityError as exc:
            if sqlstate(exc) != "23505" or attempt == 2:
                raise
        else:
            if row is not None and row.created:
                hint.advance(params["pool_id"], row.id)
            return row
    raise AssertionError("unreachable")


async def _assign_shared(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    data: AssignmentCreate,
    actor: ApiKey,
    idempotency_key: str | None,
) -> Assigned:
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
    assignment = assignment_public(
        coupon_set, row, code=coupon_set.shared_code, pool=None, recipient_id=row.recipient_id
    )
    return Assigned(assignment, inserted is not None)


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
    after = decode_id_cursor(params.cursor) if params.cursor is not None else 0
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
            assignment_public(coupon_set, r, code=code, pool=None, recipient_id=r.recipient_id)
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
        assignment_public(
            coupon_set, row, code=row.code, pool=name, recipient_id=row.recipient_id or ""
        )
        for row, name in rows
    ], [row.id for row, _ in rows]
