"""A delivery's page: targets, the analysis with its shortfall, a preview, confirm with
live progress, failures and the messages download."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app import downloads
from app.db import DriverPool, Session
from app.errors import AppError
from app.models.api_key import Scope
from app.models.delivery import DeliveryStatus
from app.pagination import PageParams, next_id_cursor
from app.schemas.delivery import DeliveryUpdate, Preview
from app.services import deliveries
from app.ui.web import (
    PREFIX,
    FormLogin,
    Login,
    UiRoute,
    done,
    field,
    one_chunk,
    refused,
    render,
    require,
)

router = APIRouter(prefix=f"{PREFIX}/deliveries", include_in_schema=False, route_class=UiRoute)

PAGE = 25


def _back(delivery_id: str, anchor: str = "") -> str:
    return f"{PREFIX}/deliveries/{delivery_id}{anchor}"


@router.get("/{delivery_id}")
async def delivery_page(
    request: Request,
    delivery_id: str,
    session: Session,
    login: Login,
    recipient_id: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    require(login, Scope.read)
    delivery = await deliveries.public_of(
        session, await deliveries.get_delivery(session, delivery_id)
    )
    params = PageParams(limit=PAGE, cursor=cursor)
    targets, seqs = await deliveries.list_targets(session, delivery_id=delivery_id, params=params)
    preview: Preview | None = None
    preview_error = None
    if recipient_id:
        try:
            async with session.begin_nested():
                preview = await deliveries.preview(
                    session, delivery_id=delivery_id, recipient_id=recipient_id
                )
        except AppError as exc:
            preview_error = exc.detail
    return render(
        request,
        "delivery.html",
        login,
        delivery=delivery,
        targets=targets[:PAGE],
        next_cursor=next_id_cursor(seqs, params),
        recipient_id=recipient_id or "",
        preview=preview,
        preview_error=preview_error,
        can_write=login.key.grants(Scope.write),
        editable=delivery.status in (DeliveryStatus.draft, DeliveryStatus.analyzed),
    )


@router.get("/{delivery_id}/progress")
async def progress(delivery_id: str, session: Session, login: Login) -> JSONResponse:
    """What the page's script polls while the delivery is sending."""
    require(login, Scope.read)
    delivery = await deliveries.public_of(
        session, await deliveries.get_delivery(session, delivery_id)
    )
    return JSONResponse(
        {
            "status": delivery.status.value,
            "processed": delivery.processed,
            "messages": delivery.messages,
            "assigned": delivery.assigned,
        }
    )


@router.post("/{delivery_id}/recipients")
async def add_targets(delivery_id: str, session: Session, posted: FormLogin) -> Response:
    """Targets pasted as CSV (a header row with recipient_id, address, fields…)."""
    login, form = posted
    require(login, Scope.write)
    text = field(form, "csv")
    if not text:
        return await done(session, login, _back(delivery_id, "#targets"), "Paste a CSV first.")
    try:
        async with session.begin_nested():
            added = await deliveries.add_targets_csv(
                session, delivery_id=delivery_id, chunks=one_chunk(text.encode() + b"\n")
            )
    except AppError as exc:
        return await refused(session, login, _back(delivery_id, "#targets"), exc)
    errors = "".join(f" Line {e.line}: {e.reason}." for e in added.errors[:5])
    return await done(
        session,
        login,
        _back(delivery_id, "#targets"),
        f"{added.added:,} targets added, {added.duplicates:,} duplicates, "
        f"{added.rejected:,} rejected.{errors}",
    )


@router.post("/{delivery_id}/analyze")
async def analyze(delivery_id: str, session: Session, posted: FormLogin) -> Response:
    login, _ = posted
    require(login, Scope.write)
    try:
        async with session.begin_nested():
            await deliveries.analyze(session, delivery_id=delivery_id)
    except AppError as exc:
        return await refused(session, login, _back(delivery_id, "#analysis"), exc)
    return await done(session, login, _back(delivery_id, "#analysis"))


@router.post("/{delivery_id}/limit")
async def set_limit(delivery_id: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    raw = field(form, "message_limit")
    try:
        body = DeliveryUpdate.model_validate({"message_limit": raw or None})
    except ValidationError:
        return await done(
            session, login, _back(delivery_id, "#analysis"), "The limit is a whole number."
        )
    try:
        async with session.begin_nested():
            await deliveries.update_delivery(session, delivery_id=delivery_id, data=body)
            await deliveries.analyze(session, delivery_id=delivery_id)
    except AppError as exc:
        return await refused(session, login, _back(delivery_id, "#analysis"), exc)
    return await done(session, login, _back(delivery_id, "#analysis"), "Message limit changed.")


@router.post("/{delivery_id}/confirm")
async def confirm(
    delivery_id: str,
    session: Session,
    posted: FormLogin,
    confirmations: deliveries.ConfirmationsDep,
) -> Response:
    """Starts the confirm and answers at once; the page shows its progress."""
    login, _ = posted
    require(login, Scope.write)
    try:
        async with session.begin_nested():
            delivery, settled = await deliveries.confirm_delivery(
                session, confirmations, delivery_id=delivery_id, actor=login.key, wait=0
            )
    except AppError as exc:
        return await refused(session, login, _back(delivery_id, "#analysis"), exc)
    message = (
        f"Confirmed: {delivery.assigned:,} codes handed out."
        if settled
        else "Confirm started: its progress shows below."
    )
    return await done(session, login, _back(delivery_id, "#status"), message)


@router.post("/{delivery_id}/failures")
async def failures(delivery_id: str, session: Session, posted: FormLogin) -> Response:
    login, form = posted
    require(login, Scope.write)
    ids = [line.strip() for line in field(form, "recipient_ids").splitlines() if line.strip()]
    if not ids or len(ids) > 10_000 or any(len(i) > 200 for i in ids):
        return await done(
            session,
            login,
            _back(delivery_id, "#failures"),
            "List 1 to 10,000 recipient ids, one a line.",
        )
    try:
        async with session.begin_nested():
            recorded = await deliveries.record_failures(
                session, delivery_id=delivery_id, recipient_ids=ids, actor=login.key
            )
    except AppError as exc:
        return await refused(session, login, _back(delivery_id, "#failures"), exc)
    unknown = f" Not targets: {', '.join(recorded.unknown[:5])}." if recorded.unknown else ""
    return await done(
        session,
        login,
        _back(delivery_id, "#failures"),
        f"Codes returned to the pool: {recorded.returned:,}.{unknown}",
    )


@router.get("/{delivery_id}/messages")
async def messages(
    delivery_id: str,
    session: Session,
    login: Login,
    pool: DriverPool,
    format: deliveries.Format = "csv",
) -> Response:
    require(login, Scope.write)  # as the API's export of messages
    source = await deliveries.messages_source(session, delivery_id=delivery_id)
    return downloads.messages(pool, source, format=format)
