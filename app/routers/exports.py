"""/v1/coupon-sets/{set_id}/export: every code of a unique set as CSV or XML, streamed."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app import downloads
from app.auth import WriteKey
from app.db import DriverPool, Session
from app.errors import NotFound, WrongSetKind
from app.models.code import CodeStatus
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.services import exports
from app.services.exports import ExportFormat

router = APIRouter(prefix="/v1/coupon-sets/{set_id}/export", tags=["export"])

_CSV_EXAMPLE = (
    "code,status,pool,recipient_id,address,channel,assigned_at,redeemed_at,delivery_id,"
    "voided_at,additional,created_at,metadata\n"
    "SPRING-AB12,assigned,default,contact-42,ann@example.com,email,"
    "2026-03-02T09:15:00.000000Z,,d-7,,false,2026-02-20T10:00:00.000000Z,\n"
)


@router.get(
    "",
    summary="Export the codes of a set",
    description=(
        "Streams every code of a unique set with its status, pool, recipient, address, "
        "channel, delivery and timestamps (ISO 8601, UTC), in the order they were added; "
        "`status` and `pool` filter. CSV: RFC 4180 quoting, a header row, LF line ends; "
        "a free-text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` "
        "so that spreadsheets do not run it as a formula. XML keeps values as they are "
        "(schema in docs/export-and-cli.md). Needs the `write` scope. Shared sets have no "
        "code rows: their recipients are in `GET .../assignments`."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file, as an attachment",
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
                "application/xml": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(NotFound, WrongSetKind),
    },
)
async def export_codes(
    _: WriteKey,
    coupon_set: CouponSetRef,
    session: Session,
    driver_pool: DriverPool,
    format: ExportFormat = ExportFormat.csv,
    status: CodeStatus | None = None,
    pool: Annotated[
        str | None, Query(min_length=1, max_length=200, description="A pool's id or name")
    ] = None,
) -> StreamingResponse:
    export = await exports.prepare_export(
        session, coupon_set=coupon_set, format=format, status=status, pool=pool
    )
    return downloads.codes(driver_pool, export)
