"""/v1/coupon-sets/{set_id}/codes: add, generate, list, get and void codes of a unique set."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.convertors import StringConvertor, register_url_convertor

from app.auth import ReadKey, WriteKey
from app.db import Session
from app.errors import (
    AlreadyRedeemed,
    CodeSpaceTooSmall,
    NotFound,
    NotReturnable,
    WrongSetKind,
)
from app.idempotency import IdempotencyKey, IdempotentRoute
from app.models.code import CodeStatus
from app.pagination import IdPageQuery, next_id_cursor
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.schemas.code import (
    CodePage,
    CodePublic,
    CodeReturn,
    CodesAdd,
    CodesAdded,
    CodesGenerate,
    CodesGenerated,
)
from app.schemas.common import PATH_TEXT
from app.schemas.mappers import code_public
from app.services import codes


class _CodeSegment(StringConvertor):
    """A code in a path, but not the action ``generate`` alone (``GET .../codes/generate``
    is then a 405, not a lookup of a code named so)."""

    regex = "(?!generate$)[^/]+"


register_url_convertor("code", _CodeSegment())

router = APIRouter(
    prefix="/v1/coupon-sets/{set_id}/codes", tags=["codes"], route_class=IdempotentRoute
)

CodeParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        pattern=PATH_TEXT,
        description="The code, matched as the set matches",
    ),
]


@router.post(
    "",
    summary="Add a list of codes",
    description="Up to 10,000 codes. Codes already in the set (compared as the set "
    "matches codes) or repeated in the list are counted as duplicates; invalid ones are "
    "rejected with their position and reason. The rest are added.",
    responses=problem_responses(NotFound, WrongSetKind),
)
async def add_codes(
    _: WriteKey, body: CodesAdd, coupon_set: CouponSetRef, session: Session, key: IdempotencyKey
) -> CodesAdded:
    return await codes.add_codes(
        session, coupon_set=coupon_set, data=body, actor=_, idempotency_key=key
    )


@router.post(
    "/generate",
    status_code=201,
    summary="Generate random codes",
    description="From a `pattern` (`#` a digit, `?` a letter; e.g. `SPRING-####-????`) or "
    "a `length` over a `charset`, with optional `prefix`/`suffix`. Codes come from a "
    "cryptographic random source and are unique within the set. Refused first when the "
    "shape cannot hold the codes with the margin `min_space_ratio`.",
    responses=problem_responses(NotFound, WrongSetKind, CodeSpaceTooSmall),
)
async def generate_codes(
    _: WriteKey,
    body: CodesGenerate,
    coupon_set: CouponSetRef,
    session: Session,
    key: IdempotencyKey,
) -> CodesGenerated:
    return await codes.generate_codes(
        session, coupon_set=coupon_set, data=body, actor=_, idempotency_key=key
    )


@router.get(
    "",
    summary="List codes",
    description="In the order they were added; filter by status, pool or recipient.",
    responses=problem_responses(NotFound, WrongSetKind),
)
async def list_codes(
    _: ReadKey,
    coupon_set: CouponSetRef,
    session: Session,
    page: IdPageQuery,
    status: CodeStatus | None = None,
    pool: Annotated[str | None, Query(max_length=200)] = None,
    recipient_id: Annotated[str | None, Query(max_length=200)] = None,
) -> CodePage:
    rows = await codes.list_codes(
        session,
        coupon_set=coupon_set,
        status=status,
        pool=pool,
        recipient_id=recipient_id,
        params=page,
    )
    return CodePage(
        items=[code_public(code, name) for code, name in rows[: page.limit]],
        next_cursor=next_id_cursor([code.id for code, _ in rows], page),
    )


@router.get(
    "/{code:code}",
    summary="Get a code",
    responses=problem_responses(NotFound, WrongSetKind),
)
async def get_code(
    _: ReadKey, coupon_set: CouponSetRef, code: CodeParam, session: Session
) -> CodePublic:
    return code_public(*await codes.get_code(session, coupon_set=coupon_set, code=code))


@router.post(
    "/{code:code}/return",
    summary="Give an assigned code back to its pool",
    description="For a code handed out by an assignment whose message bounced: the code "
    "becomes available again and its recipient holds no code of the pool any more "
    "(audited as `return`, with the optional `reason`). Only an assigned code that was "
    "not redeemed and is not held at a checkout; anything else, a second return "
    "included, is a `409` `code-not-returnable`. Codes a delivery handed out are given "
    "back per target with `POST /v1/deliveries/{delivery_id}/failures`.",
    responses=problem_responses(NotFound, WrongSetKind, NotReturnable),
)
async def return_code(
    _: WriteKey,
    coupon_set: CouponSetRef,
    code: CodeParam,
    session: Session,
    key: IdempotencyKey,
    body: CodeReturn | None = None,
) -> CodePublic:
    return code_public(
        *await codes.return_code(
            session,
            coupon_set=coupon_set,
            code=code,
            reason=body.reason if body else None,
            actor=_,
            idempotency_key=key,
        )
    )


@router.post(
    "/{code:code}/void",
    summary="Void a code",
    description="Withdraws an available or assigned code; it can no longer be assigned "
    "or redeemed. Voiding twice changes nothing; a redeemed code cannot be voided.",
    responses=problem_responses(NotFound, WrongSetKind, AlreadyRedeemed),
)
async def void_code(
    _: WriteKey,
    coupon_set: CouponSetRef,
    code: CodeParam,
    session: Session,
    key: IdempotencyKey,
) -> CodePublic:
    return code_public(
        *await codes.void_code(
            session, coupon_set=coupon_set, code=code, actor=_, idempotency_key=key
        )
    )
