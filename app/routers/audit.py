"""/v1/coupon-sets/{set_id}/audit: the append-only trail of a set's code changes."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth import ReadKey
from app.db import Session
from app.errors import NotFound
from app.models.audit import AuditAction
from app.pagination import IdPageQuery, next_id_cursor
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.schemas.audit import AuditPage
from app.schemas.mappers import audit_event_public
from app.services import audit

router = APIRouter(prefix="/v1/coupon-sets/{set_id}/audit", tags=["audit"])


@router.get(
    "",
    summary="The audit trail of a set, newest first",
    description="One row per assignment, redemption, hold, confirm, release, rollback, "
    "void and code import: who (API key), when, what, and the Idempotency-Key. Filter by "
    "`action`, `code` or `recipient_id` (one contact's events in this set; across sets: "
    "`GET /v1/recipients/{recipient_id}/activity`).",
    responses=problem_responses(NotFound),
)
async def list_audit_events(
    _: ReadKey,
    coupon_set: CouponSetRef,
    session: Session,
    page: IdPageQuery,
    action: AuditAction | None = None,
    code: Annotated[str | None, Query(max_length=100)] = None,
    recipient_id: Annotated[
        str | None,
        Query(max_length=200, description="Only this recipient's events", examples=["contact-42"]),
    ] = None,
) -> AuditPage:
    events = await audit.list_events(
        session,
        set_id=coupon_set.id,
        action=action,
        code=code,
        recipient_id=recipient_id,
        params=page,
    )
    return AuditPage(
        items=[audit_event_public(e) for e in events[: page.limit]],
        next_cursor=next_id_cursor([e.id for e in events], page),
    )
