"""/v1/coupon-sets/{set_id}/pools: the named stocks of a unique set."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.auth import ReadKey, WriteKey
from app.db import Session
from app.errors import (
    Conflict,
    DefaultPoolProtected,
    NameTaken,
    NotFound,
    PoolNotEmpty,
    PoolsNotSupported,
)
from app.idempotency import IdempotentRoute
from app.models.pool import Pool
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.schemas.common import PATH_TEXT
from app.schemas.mappers import pool_public
from app.schemas.pool import PoolCreate, PoolList, PoolPublic, PoolStock, PoolUpdate
from app.services import codes, pools

router = APIRouter(
    prefix="/v1/coupon-sets/{set_id}/pools", tags=["pools"], route_class=IdempotentRoute
)


async def _pool(
    coupon_set: CouponSetRef,
    pool: Annotated[
        str, Path(min_length=1, max_length=200, pattern=PATH_TEXT, description="Pool id or name")
    ],
    session: Session,
) -> Pool:
    return await pools.get_pool(session, coupon_set=coupon_set, ref=pool)


PoolRef = Annotated[Pool, Depends(_pool)]


async def _with_stock(session: Session, rows: list[Pool]) -> list[PoolPublic]:
    if not rows:
        return []
    # One pool (get, create, rename) is counted alone; a list counts the whole set.
    only = rows[0].id if len(rows) == 1 else None
    stock = await codes.pool_stock(session, set_id=rows[0].set_id, pool_id=only)
    return [pool_public(p, PoolStock(**stock.get(p.id, {}))) for p in rows]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a pool",
    responses=problem_responses(NotFound, NameTaken, PoolsNotSupported, Conflict),
)
async def create_pool(
    _: WriteKey, body: PoolCreate, coupon_set: CouponSetRef, session: Session, response: Response
) -> PoolPublic:
    pool = await pools.create_pool(session, coupon_set=coupon_set, name=body.name)
    response.headers["Location"] = f"/v1/coupon-sets/{coupon_set.id}/pools/{pool.id}"
    return (await _with_stock(session, [pool]))[0]


@router.get(
    "",
    summary="List the pools of a set",
    responses=problem_responses(NotFound, PoolsNotSupported),
)
async def list_pools(_: ReadKey, coupon_set: CouponSetRef, session: Session) -> PoolList:
    rows = await pools.list_pools(session, coupon_set=coupon_set)
    return PoolList(items=await _with_stock(session, rows))


@router.get(
    "/{pool}",
    summary="Get a pool by id or name, with its stock",
    responses=problem_responses(NotFound, PoolsNotSupported),
)
async def get_pool(_: ReadKey, pool: PoolRef, session: Session) -> PoolPublic:
    return (await _with_stock(session, [pool]))[0]


@router.patch(
    "/{pool}",
    summary="Rename a pool, or set its low-stock alerts",
    description="Only the fields sent change. `low_stock_threshold` (codes) and "
    "`low_stock_days` (days of stock left, from the forecast) arm `pool.low_stock` "
    "(docs/events.md); null clears one.",
    responses=problem_responses(NotFound, NameTaken, DefaultPoolProtected, PoolsNotSupported),
)
async def rename_pool(_: WriteKey, body: PoolUpdate, pool: PoolRef, session: Session) -> PoolPublic:
    changed = await pools.update_pool(session, pool=pool, data=body)
    return (await _with_stock(session, [changed]))[0]


@router.delete(
    "/{pool}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an empty pool",
    responses=problem_responses(NotFound, PoolNotEmpty, DefaultPoolProtected, PoolsNotSupported),
)
async def delete_pool(_: WriteKey, pool: PoolRef, session: Session) -> None:
    await pools.delete_pool(session, pool=pool)
