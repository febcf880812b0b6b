"""/v1/coupon-sets: create, search, get by id or key, update, archive, delete."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from app.auth import ReadKey, WriteKey
from app.db import Session
from app.errors import KeyTaken, NotFound, SetInUse, WindowConflict, WrongSetKind
from app.idempotency import IdempotentRoute
from app.models.coupon_set import CouponSet, SetKind, SetStatus
from app.pagination import PageQuery, build_page
from app.problems import problem_responses
from app.schemas.common import PATH_TEXT
from app.schemas.coupon_set import CouponSetCreate, CouponSetPage, CouponSetPublic, CouponSetUpdate
from app.schemas.mappers import coupon_set_listed, coupon_set_public
from app.services import coupon_sets
from app.services.stats import service as stats

router = APIRouter(prefix="/v1/coupon-sets", tags=["coupon-sets"], route_class=IdempotentRoute)


SetRef = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=PATH_TEXT, description="The set's id or its key"),
]


async def _coupon_set(set_id: SetRef, session: Session) -> CouponSet:
    return await coupon_sets.get_coupon_set(session, set_id)


CouponSetRef = Annotated[CouponSet, Depends(_coupon_set)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a coupon set",
    description="A `unique` set gets its `default` pool; a `shared` set needs its "
    "`shared_code`. The `key` is generated from the label when absent.",
    responses=problem_responses(KeyTaken),
)
async def create_coupon_set(
    _: WriteKey, body: CouponSetCreate, session: Session, response: Response
) -> CouponSetPublic:
    coupon_set = await coupon_sets.create_coupon_set(session, data=body)
    response.headers["Location"] = f"{router.prefix}/{coupon_set.id}"
    return coupon_set_public(coupon_set)


@router.get(
    "",
    summary="Search coupon sets, newest first",
    description="Each set carries `stats`, its counts at a glance (exact, read from "
    "counters: as fast for sets of ten million codes).",
    responses=problem_responses(),
)
async def list_coupon_sets(
    session: Session,
    _: ReadKey,
    page: PageQuery,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Part of the label or key, case-insensitive"),
    ] = None,
    kind: SetKind | None = None,
    status: SetStatus | None = None,
) -> CouponSetPage:
    rows = await coupon_sets.list_coupon_sets(session, q=q, kind=kind, status=status, params=page)
    glances = await stats.glances(session, rows[: page.limit])
    return build_page(CouponSetPage, rows, page, lambda s: coupon_set_listed(s, glances[s.id]))


@router.get(
    "/{set_id}",
    summary="Get a coupon set by id or key",
    responses=problem_responses(NotFound),
)
async def get_coupon_set(_: ReadKey, coupon_set: CouponSetRef) -> CouponSetPublic:
    return coupon_set_public(coupon_set)


@router.patch(
    "/{set_id}",
    summary="Update a coupon set",
    description="Changes only the fields sent; `null` clears an optional field. "
    "Unknown fields, `kind` and `status` are refused.",
    responses=problem_responses(NotFound, KeyTaken, WrongSetKind, WindowConflict),
)
async def update_coupon_set(
    _: WriteKey, body: CouponSetUpdate, coupon_set: CouponSetRef, session: Session
) -> CouponSetPublic:
    updated = await coupon_sets.update_coupon_set(session, coupon_set=coupon_set, data=body)
    return coupon_set_public(updated)


@router.post(
    "/{set_id}/archive",
    summary="Archive a coupon set",
    description="An archived set hands out and redeems nothing. Archiving twice is harmless.",
    responses=problem_responses(NotFound),
)
async def archive_coupon_set(
    _: WriteKey, coupon_set: CouponSetRef, session: Session
) -> CouponSetPublic:
    archived = await coupon_sets.set_status(
        session, coupon_set=coupon_set, status=SetStatus.archived
    )
    return coupon_set_public(archived)


@router.post(
    "/{set_id}/unarchive",
    summary="Make an archived coupon set active again",
    responses=problem_responses(NotFound),
)
async def unarchive_coupon_set(
    _: WriteKey, coupon_set: CouponSetRef, session: Session
) -> CouponSetPublic:
    active = await coupon_sets.set_status(session, coupon_set=coupon_set, status=SetStatus.active)
    return coupon_set_public(active)


@router.delete(
    "/{set_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a coupon set that was never used",
    description="Deletes the set with its pools and codes. Refused with `set-in-use` once "
    "any code of the set was ever assigned; archive such a set instead.",
    responses=problem_responses(NotFound, SetInUse),
)
async def delete_coupon_set(_: WriteKey, coupon_set: CouponSetRef, session: Session) -> None:
    await coupon_sets.delete_coupon_set(session, coupon_set=coupon_set)
