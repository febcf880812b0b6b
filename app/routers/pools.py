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
    PoolsNotSupported,
    problem_responses,
)
from app.models.pool import Pool, PoolCreate, PoolList, PoolPublic, PoolUpdate
from app.routers.coupon_sets import CouponSetRef
from app.services import pools

router = APIRouter(prefix="/v1/coupon-sets/{set_id}/pools", tags=["pools"])


async def _pool(
    coupon_set: CouponSetRef,
    pool: Annotated[str, Path(min_length=1, max_length=200, description="Pool id or name")],
    session: Session,
) -> Pool:
    return await pools.get_pool(session, coupon_set=coupon_set, ref=pool)


PoolRef = Annotated[Pool, Depends(_pool)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a pool",
    response_model=PoolPublic,
    responses=problem_responses(NotFound, NameTaken, PoolsNotSupported, Conflict),
)
async def create_pool(
    _: WriteKey, body: PoolCreate, coupon_set: CouponSetRef, session: Session, response: Response
) -> Pool:
    pool = await pools.create_pool(session, coupon_set=coupon_set, name=body.name)
    response.headers["Location"] = f"/v1/coupon-sets/{coupon_set.id}/pools/{pool.id}"
    return pool


@router.get(
    "",
    summary="List the pools of a set",
    responses=problem_responses(NotFound, PoolsNotSupported),
)
async def list_pools(_: ReadKey, coupon_set: CouponSetRef, session: Session) -> PoolList:
    rows = await pools.list_pools(session, coupon_set=coupon_set)
    return PoolList(items=[PoolPublic.model_validate(pool) for pool in rows])


@router.get(
    "/{pool}",
    summary="Get a pool by id or name",
    response_model=PoolPublic,
    responses=problem_responses(NotFound, PoolsNotSupported),
)
async def get_pool(_: ReadKey, pool: PoolRef) -> Pool:
    return pool


@router.patch(
    "/{pool}",
    summary="Rename a pool",
    response_model=PoolPublic,
    responses=problem_responses(NotFound, NameTaken, DefaultPoolProtected, PoolsNotSupported),
)
async def rename_pool(_: WriteKey, body: PoolUpdate, pool: PoolRef, session: Session) -> Pool:
    return await pools.rename_pool(session, pool=pool, name=body.name)


@router.delete(
    "/{pool}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a pool",
    responses=problem_responses(NotFound, DefaultPoolProtected, PoolsNotSupported),
)
async def delete_pool(_: WriteKey, pool: PoolRef, session: Session) -> None:
    await pools.delete_pool(session, pool=pool)
