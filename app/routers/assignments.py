"""/v1/coupon-sets/{set_id}/assignments: give a recipient a code (the workflow engine's
"assign coupon" step) and list who got what."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.auth import AssignKey, ReadKey
from app.db import Session
from app.errors import Expired, NotFound, NotYetValid, PoolExhausted, PoolsNotSupported, SetArchived
from app.idempotency import IdempotencyKey, IdempotentRoute
from app.pagination import IdPageQuery, next_id_cursor
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef, SetRef
from app.schemas.assignment import AssignmentCreate, AssignmentPage, AssignmentPublic
from app.services import assignments

router = APIRouter(
    prefix="/v1/coupon-sets/{set_id}/assignments",
    tags=["assignments"],
    route_class=IdempotentRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Assign a code to a recipient",
    description="`201` with a new code; `200` with the same body when the recipient "
    "already holds a code of this set and pool (send `additional: true` for another). "
    "Unique sets take one free code of the pool; shared sets give the shared code. "
    "An empty pool is `pool-exhausted`, unless the set has a `fallback_code`, which is "
    "then given with `fallback: true`.",
    responses={
        200: {"description": "The recipient already held this code", "model": AssignmentPublic},
        **problem_responses(
            NotFound, PoolExhausted, NotYetValid, Expired, SetArchived, PoolsNotSupported
        ),
    },
)
async def assign_code(
    _: AssignKey,
    set_id: SetRef,
    body: AssignmentCreate,
    session: Session,
    response: Response,
    key: IdempotencyKey,
    claimer: assignments.Claims,
    handed_over: assignments.HandedOver,
) -> AssignmentPublic:
    # The hot path: the service finds the set and pool itself, in one query.
    assignment, created = await assignments.assign(
        session,
        claimer=claimer,
        set_ref=set_id,
        data=body,
        actor=_,
        idempotency_key=key,
        handed_over=handed_over,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return assignment


@router.get(
    "",
    summary="List assignments",
    description="In the order they were made; filter by recipient, pool or delivery.",
    responses=problem_responses(NotFound),
)
async def list_assignments(
    _: ReadKey,
    coupon_set: CouponSetRef,
    session: Session,
    page: IdPageQuery,
    recipient_id: Annotated[str | None, Query(max_length=200)] = None,
    pool: Annotated[str | None, Query(max_length=200)] = None,
    delivery_id: Annotated[str | None, Query(max_length=200)] = None,
) -> AssignmentPage:
    items, ids = await assignments.list_assignments(
        session,
        coupon_set=coupon_set,
        recipient_id=recipient_id,
        pool=pool,
        delivery_id=delivery_id,
        params=page,
    )
    return AssignmentPage(items=items[: page.limit], next_cursor=next_id_cursor(ids, page))
