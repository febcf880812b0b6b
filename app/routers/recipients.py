"""/v1/recipients/{recipient_id}: one recipient across every set, its coupons and its
activity."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.convertors import PathConvertor, register_url_convertor

from app.auth import ReadKey
from app.db import Session
from app.errors import InvalidCursor
from app.pagination import PageParams, page_query
from app.problems import problem_responses
from app.schemas.common import PATH_TEXT
from app.schemas.recipient import ActivityPage, RecipientCouponPage
from app.services import recipients
from app.services.recipients import ACTIVITY_CURSOR, COUPONS_CURSOR

router = APIRouter(prefix="/v1/recipients", tags=["recipients"])


class _AnyText(PathConvertor):
    """Starlette's `path` (``.*``) without its one gap: a line break, which a recipient id
    may hold as the assignment body allows (sent as %0A)."""

    regex = r"[\s\S]*"


register_url_convertor("any_text", _AnyText())

# `any_text`: a recipient id may hold a slash (sent as %2F) or a line break.
RecipientId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=PATH_TEXT,
        description="The caller's id for the contact, as given to assignments",
        examples=["contact-42"],
    ),
]
CouponsPageQuery = Annotated[PageParams, Depends(page_query(COUPONS_CURSOR))]
ActivityPageQuery = Annotated[PageParams, Depends(page_query(ACTIVITY_CURSOR))]


@router.get(
    "/{recipient_id:any_text}/coupons",
    summary="A contact's coupons across sets",
    description="Every code of a unique set and every assignment of a shared set's code "
    "this recipient holds, in any set: grouped by set, within a set in the order the "
    "codes were added. Cursor-paginated; a recipient nobody gave a coupon to has an "
    "empty list (`200`), since recipients are the caller's ids.",
    responses=problem_responses(InvalidCursor),
)
async def list_recipient_coupons(
    _: ReadKey, recipient_id: RecipientId, session: Session, page: CouponsPageQuery
) -> RecipientCouponPage:
    return await recipients.list_coupons(session, recipient_id=recipient_id, params=page)


@router.get(
    "/{recipient_id:any_text}/activity",
    summary="What happened to a contact's coupons, newest first",
    description="From the audit trail: `assigned`, `redeemed`, `held`, `hold_confirmed`, "
    "`hold_released`, `rolled_back`, `returned` (given back by a return or a delivery's "
    "reported failure), `voided`; and `hold_expired` at the end of each hold that ran out "
    "(read from the hold itself: an expiry writes no row). Cursor-paginated; an unknown "
    "recipient has an empty list (`200`).",
    responses=problem_responses(InvalidCursor),
)
async def list_recipient_activity(
    _: ReadKey, recipient_id: RecipientId, session: Session, page: ActivityPageQuery
) -> ActivityPage:
    return await recipients.list_activity(session, recipient_id=recipient_id, params=page)
