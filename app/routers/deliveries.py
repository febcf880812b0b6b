"""/v1/deliveries: target lists, analysis, message limit, confirm, failures, preview and
the rendered messages."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from app import downloads
from app.auth import ReadKey, WriteKey
from app.db import DriverPool, Session
from app.errors import (
    DeliveryNotEditable,
    DeliveryNotFinished,
    Expired,
    InsufficientCodes,
    NotFound,
    NotYetValid,
    PayloadTooLarge,
    SetArchived,
    TemplateInvalid,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.idempotency import IdempotentRoute, hashed_stream, streams_body
from app.models.delivery import DeliveryStatus
from app.pagination import IdPageQuery, PageQuery, encode_cursor, next_id_cursor
from app.problems import problem_responses
from app.schemas.common import PATH_TEXT
from app.schemas.delivery import (
    Analysis,
    DeliveryCreate,
    DeliveryPage,
    DeliveryPublic,
    DeliveryUpdate,
    FailuresRecorded,
    FailuresReport,
    Preview,
    TargetPage,
    TargetsAdd,
    TargetsAdded,
)
from app.schemas.mappers import delivery_public
from app.services import deliveries
from app.services.deliveries import ConfirmationsDep
from app.settings import SettingsDep

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], route_class=IdempotentRoute)

DeliveryId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=PATH_TEXT, description="The delivery's id")
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a delivery",
    description="A draft send of `coupon_set_id` (its id or key) through one channel, from "
    "one pool of a unique set (`default` when absent). The subject and template are "
    "checked now: an error names its line.",
    responses=problem_responses(NotFound, TemplateInvalid),
)
async def create_delivery(
    caller: WriteKey, body: DeliveryCreate, session: Session, response: Response
) -> DeliveryPublic:
    delivery, set_key, pool = await deliveries.create_delivery(session, data=body, actor=caller)
    response.headers["Location"] = f"{router.prefix}/{delivery.id}"
    return delivery_public(delivery, set_key=set_key, pool=pool)


@router.get(
    "",
    summary="List deliveries, newest first",
    description="`coupon_set_id` (id or key) gives the deliveries that used a set.",
    responses=problem_responses(NotFound),
)
async def list_deliveries(
    _: ReadKey,
    session: Session,
    page: PageQuery,
    coupon_set_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: DeliveryStatus | None = None,
) -> DeliveryPage:
    rows = await deliveries.list_deliveries(
        session, coupon_set_ref=coupon_set_id, status=status, params=page
    )
    shown = rows[: page.limit]
    return DeliveryPage(
        items=[delivery_public(d, set_key=key, pool=pool) for d, key, pool in shown],
        next_cursor=encode_cursor(shown[-1][0]) if len(rows) > page.limit else None,
    )


@router.get(
    "/{delivery_id}",
    summary="Get a delivery with its counts and confirm progress",
    responses=problem_responses(NotFound),
)
async def get_delivery(_: ReadKey, delivery_id: DeliveryId, session: Session) -> DeliveryPublic:
    delivery = await deliveries.get_delivery(session, delivery_id)
    return await deliveries.public_of(session, delivery)


@router.patch(
    "/{delivery_id}",
    summary="Change a draft delivery (label, texts, message limit)",
    description="Only before confirm. Any change makes the delivery a draft again: analyse "
    "it anew. `message_limit: null` removes the limit.",
    responses=problem_responses(NotFound, DeliveryNotEditable, TemplateInvalid),
)
async def update_delivery(
    _: WriteKey, delivery_id: DeliveryId, body: DeliveryUpdate, session: Session
) -> DeliveryPublic:
    delivery = await deliveries.update_delivery(session, delivery_id=delivery_id, data=body)
    return await deliveries.public_of(session, delivery)


_TARGETS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TargetsAdd"}},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "recipient_id,address,first_name\nc-1,ann@example.com,Ann\n",
            },
        },
    }
}


async def _json_body(request: Request, limit: int) -> bytes:
    """A JSON list is parsed whole, so it keeps the ordinary body limit even though this
    route takes CSV uploads up to the upload limit."""
    body = bytearray()
    async for chunk in hashed_stream(request):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"A JSON list of targets is at most {limit} bytes; send larger lists as CSV."
            )
    return bytes(body)


@router.post(
    "/{delivery_id}/recipients",
    summary="Add targets (JSON or CSV)",
    description="A JSON list of up to 10,000 `{recipient_id, address, fields}`, or a "
    "`text/csv` body (up to `COUPONS_MAX_UPLOAD_BYTES`, read as it streams) with a header "
    "row: `recipient_id`, optional `address`, and any other columns as extra fields for "
    "the template (`{{ recipient.<column> }}`). Targets are "
    "deduplicated by `recipient_id` (the first one stays). Only before confirm.",
    openapi_extra=_TARGETS_BODY,
    responses=problem_responses(
        NotFound, DeliveryNotEditable, UnsupportedMediaType, ValidationFailed, PayloadTooLarge
    ),
)
@streams_body
async def add_recipients(
    _: WriteKey,
    delivery_id: DeliveryId,
    request: Request,
    session: Session,
    settings: SettingsDep,
) -> TargetsAdded:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            body = TargetsAdd.model_validate_json(
                await _json_body(request, settings.max_body_bytes)
            )
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        return await deliveries.add_targets(
            session, delivery_id=delivery_id, targets=body.recipients
        )
    if media_type in ("text/csv", "text/plain", "application/csv"):
        return await deliveries.add_targets_csv(
            session, delivery_id=delivery_id, chunks=hashed_stream(request)
        )
    raise UnsupportedMediaType(
        f"Targets come as application/json or text/csv, not '{media_type or 'nothing'}'."
    )


@router.get(
    "/{delivery_id}/recipients",
    summary="List the targets",
    description="In the order they were added, with the code each holds in the delivery's "
    "pool (before confirm: a code they hold already) and when a failure was reported.",
    responses=problem_responses(NotFound),
)
async def list_recipients(
    _: ReadKey, delivery_id: DeliveryId, session: Session, page: IdPageQuery
) -> TargetPage:
    items, seqs = await deliveries.list_targets(session, delivery_id=delivery_id, params=page)
    return TargetPage(items=items[: page.limit], next_cursor=next_id_cursor(seqs, page))


@router.post(
    "/{delivery_id}/analyze",
    summary="Analyse the delivery before confirm",
    description="Counts the messages (after the message limit), the targets who already "
    "hold a code of the set and pool (they keep it), the free codes per pool, whether "
    "they are enough and the shortfall, with a log in words. Takes nothing.",
    responses=problem_responses(NotFound),
)
async def analyze_delivery(_: WriteKey, delivery_id: DeliveryId, session: Session) -> Analysis:
    delivery = await deliveries.analyze(session, delivery_id=delivery_id)
    assert delivery.analysis is not None
    return Analysis.model_validate(delivery.analysis)


@router.post(
    "/{delivery_id}/confirm",
    summary="Confirm: give every targeted recipient a code, in one set-based step",
    description="Refused with `insufficient-codes` (and the shortfall) when the pool is "
    "short; nothing is taken then. Otherwise the delivery is `sending` while codes are "
    "handed out in batches, then `finished`. `200` with the finished delivery when that "
    "took less than a few seconds, else `202` with the delivery in progress (`Location` "
    "to poll). Confirming a finished delivery changes nothing and answers it again. When "
    "a confirm cannot finish, the codes it took go back and the delivery is `failed` with "
    "the reason; confirming again starts over.",
    responses={
        200: {"description": "Settled: `finished` (or `failed`)", "model": DeliveryPublic},
        202: {"description": "Still sending: poll the delivery", "model": DeliveryPublic},
        **problem_responses(NotFound, InsufficientCodes, SetArchived, NotYetValid, Expired),
    },
)
async def confirm_delivery(
    caller: WriteKey,
    delivery_id: DeliveryId,
    session: Session,
    confirmations: ConfirmationsDep,
    settings: SettingsDep,
) -> Response:
    delivery, settled = await deliveries.confirm_delivery(
        session,
        confirmations,
        delivery_id=delivery_id,
        actor=caller,
        wait=settings.confirm_wait_seconds,
    )
    body = delivery.model_dump(mode="json")
    if settled:
        return JSONResponse(body)
    return JSONResponse(
        body, status_code=202, headers={"Location": f"{router.prefix}/{delivery.id}"}
    )


@router.post(
    "/{delivery_id}/failures",
    summary="Report messages that could not be sent: their codes go back to the pool",
    description="Up to 10,000 recipient ids. Codes this delivery gave them return to the "
    "pool (audited as `unassign`); a code they held before stays theirs.",
    responses=problem_responses(NotFound, DeliveryNotFinished),
)
async def report_failures(
    caller: WriteKey, delivery_id: DeliveryId, body: FailuresReport, session: Session
) -> FailuresRecorded:
    return await deliveries.record_failures(
        session, delivery_id=delivery_id, recipient_ids=body.recipient_ids, actor=caller
    )


@router.get(
    "/{delivery_id}/preview",
    summary="Render one target's subject and body",
    description="Before confirm: with the code the recipient already holds, or a clear "
    "placeholder where their code will be. After: with their code.",
    responses=problem_responses(NotFound, TemplateInvalid),
)
async def preview_delivery(
    _: ReadKey,
    delivery_id: DeliveryId,
    session: Session,
    recipient_id: Annotated[str, Query(min_length=1, max_length=200)],
) -> Preview:
    return await deliveries.preview(session, delivery_id=delivery_id, recipient_id=recipient_id)


@router.get(
    "/{delivery_id}/messages",
    summary="Export the rendered messages for the sending system",
    description="Streams one message per target of the finished delivery, in list order "
    "(reported failures left out): recipient_id, address, code, subject, body, as CSV "
    "(formula-like cells neutralised with a leading `'`) or JSON lines.",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The messages",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(NotFound, DeliveryNotFinished, TemplateInvalid),
    },
)
async def export_messages(
    _: WriteKey,
    delivery_id: DeliveryId,
    session: Session,
    pool: DriverPool,
    format: deliveries.Format = "csv",
) -> StreamingResponse:
    source = await deliveries.messages_source(session, delivery_id=delivery_id)
    return downloads.messages(pool, source, format=format)
