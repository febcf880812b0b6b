"""Pools of a unique set: create, list, find, rename, delete."""

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import flush_unique
from app.errors import (
    Conflict,
    DefaultPoolProtected,
    NameTaken,
    NotFound,
    PoolNotEmpty,
    PoolsNotSupported,
)
from app.models.code import Code
from app.models.coupon_set import CouponSet, SetKind
from app.models.pool import DEFAULT_POOL, MAX_POOLS_PER_SET, Pool
from app.schemas.pool import PoolUpdate
from app.services.coupon_sets import parse_id

_NAME_INDEX = "uq_pools_set_id_name_lower"


def _ensure_unique_set(coupon_set: CouponSet) -> None:
    if coupon_set.kind == SetKind.shared:
        raise PoolsNotSupported(
            f"The set '{coupon_set.key}' is shared: it has one code and no pools. "
            "Pools divide the stock of a unique set."
        )


def _ensure_not_default(pool: Pool) -> None:
    if pool.name == DEFAULT_POOL:
        raise DefaultPoolProtected("Every unique set keeps its 'default' pool.")


async def _save(session: AsyncSession, pool: Pool, *, name: str) -> None:
    """Name and save the pool; a name taken in the set is a clean 409."""

    def apply() -> None:
        pool.name = name
        session.add(pool)

    taken = NameTaken(f"This set already has a pool named '{name}'.")
    await flush_unique(session, apply, index=_NAME_INDEX, conflict=taken)


async def create_pool(session: AsyncSession, *, coupon_set: CouponSet, name: str) -> Pool:
    _ensure_unique_set(coupon_set)
    count = await session.scalar(select(func.count()).where(Pool.set_id == coupon_set.id))
    if (count or 0) >= MAX_POOLS_PER_SET:
        raise Conflict(f"A set holds at most {MAX_POOLS_PER_SET} pools.")
    pool = Pool(set_id=coupon_set.id, name=name)
    await _save(session, pool, name=name)
    await session.refresh(pool)
    return pool


async def list_pools(session: AsyncSession, *, coupon_set: CouponSet) -> list[Pool]:
    _ensure_unique_set(coupon_set)
    stmt = select(Pool).where(Pool.set_id == coupon_set.id).order_by(Pool.created_at, Pool.id)
    return list((await session.execute(stmt)).scalars())


async def get_pool(session: AsyncSession, *, coupon_set: CouponSet, ref: str) -> Pool:
    """Find a pool of the set by its id or, failing that, by its name (case-insensitive)."""
    _ensure_unique_set(coupon_set)
    pool_id = parse_id(ref)
    match = Pool.id == pool_id if pool_id else func.lower(Pool.name) == ref.lower()
    stmt = select(Pool).where(Pool.set_id == coupon_set.id, match)
    pool = (await session.execute(stmt)).scalar_one_or_none()
    if pool is None:
        raise NotFound(f"The set '{coupon_set.key}' has no pool '{ref}'.")
    return pool


async def rename_pool(session: AsyncSession, *, pool: Pool, name: str) -> Pool:
    _ensure_not_default(pool)
    if name.lower() == DEFAULT_POOL:
        raise NameTaken("'default' is the name of the set's default pool.")
    await _save(session, pool, name=name)
    await session.refresh(pool)
    return pool


async def update_pool(session: AsyncSession, *, pool: Pool, data: PoolUpdate) -> Pool:
    """A new name and/or low-stock limits (docs/events.md); only the fields sent."""
    sent = data.model_fields_set
    if "low_stock_threshold" in sent:
        pool.low_stock_threshold = data.low_stock_threshold
    if "low_stock_days" in sent:
        pool.low_stock_days = data.low_stock_days
    if data.name is not None and data.name != pool.name:
        return await rename_pool(session, pool=pool, name=data.name)
    session.add(pool)
    await session.flush()
    await session.refresh(pool)
    return pool


async def delete_pool(session: AsyncSession, *, pool: Pool) -> None:
    _ensure_not_default(pool)
    # Lock the pool: codes added meanwhile (their foreign key needs a share lock on it)
    # wait, then fail; codes already there refuse the deletion.
    await session.execute(select(Pool.id).where(Pool.id == pool.id).with_for_update())
    if await session.scalar(select(exists().where(Code.pool_id == pool.id))):
        raise PoolNotEmpty(f"The pool '{pool.name}' holds codes; void or move them first.")
    await session.delete(pool)
    await session.flush()
