"""The rendered messages: one target's preview, and the export of a finished delivery
for the sending system (CSV or JSON lines), whose first complete read marks the delivery
sent (``sent_at``; the statistics count its codes as sent).

The preview and the checks before an export run in the request's session. The export
itself reads the plain asyncpg pool in pages of short autocommit statements
(``sql.MESSAGES_UNIQUE``/``MESSAGES_SHARED``), after the session has committed: no
transaction stays open while a slow client reads."""

import csv
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.csv_guard import cell
from app.errors import DeliveryNotFinished, NotFound
from app.models.code import Code
from app.models.coupon_set import CouponSet
from app.models.delivery import Delivery, DeliveryRecipient, DeliveryStatus
from app.schemas.delivery import Preview
from app.services.deliveries import sql
from app.services.deliveries.drafts import compiled, load
from app.services.deliveries.templates import Compiled

PLACEHOLDER = "[coupon code: assigned at confirm]"
MESSAGE_PAGE = 2_000
FIELDS = ("recipient_id", "address", "code", "subject", "body")

Format = Literal["csv", "jsonl"]


def _context(
    *,
    coupon_set: CouponSet,
    delivery: Delivery,
    recipient_id: str,
    address: str | None,
    fields: Mapping[str, Any],
    code: str | None,
) -> dict[str, Any]:
    return {
        "coupon": {
            "code": code,
            "valid_from": coupon_set.valid_from,
            "valid_until": coupon_set.valid_until,
        },
        "recipient": {**fields, "recipient_id": recipient_id, "address": address},
        "coupon_set": {
            "key": coupon_set.key,
            "label": coupon_set.label,
            "description": coupon_set.description,
            "valid_from": coupon_set.valid_from,
            "valid_until": coupon_set.valid_until,
            "metadata": coupon_set.metadata_,
        },
        "delivery": {
            "id": str(delivery.id),
            "label": delivery.label,
            "channel": delivery.channel,
            "metadata": delivery.metadata_,
        },
    }


async def preview(session: AsyncSession, *, delivery_id: str, recipient_id: str) -> Preview:
    delivery = await load(session, delivery_id)
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    target = (
        await session.execute(
            select(DeliveryRecipient).where(
                DeliveryRecipient.delivery_id == delivery.id,
                DeliveryRecipient.recipient_id == recipient_id,
            )
        )
    ).scalar_one_or_none()
    if target is None:
        raise NotFound(f"The recipient '{recipient_id}' is not a target of this delivery.")
    code: str | None
    if delivery.pool_id is None:
        code, source = coupon_set.shared_code, "shared"
    else:
        held = (
            await session.execute(
                select(Code.code, Code.delivery_id).where(
                    Code.pool_id == delivery.pool_id,
                    Code.recipient_id == recipient_id,
                    ~Code.additional,
                )
            )
        ).first()
        if held is None:
            code, source = None, "placeholder"
        else:
            code = held.code
            source = "assigned" if held.delivery_id == str(delivery.id) else "kept"
    subject, body = compiled(delivery).render(
        _context(
            coupon_set=coupon_set,
            delivery=delivery,
            recipient_id=target.recipient_id,
            address=target.address,
            fields=target.fields,
            code=code if code is not None else PLACEHOLDER,
        )
    )
    return Preview(
        recipient_id=target.recipient_id,
        address=target.address,
        code=code,
        code_source=source,
        subject=subject,
        body=body,
    )


@dataclass(frozen=True)
class MessageSource:
    """What an export renders from, read and checked before its first byte is sent."""

    delivery: Delivery
    coupon_set: CouponSet
    compiled: Compiled


async def messages_source(session: AsyncSession, *, delivery_id: str) -> MessageSource:
    """Everything checked before the first byte of the export is sent."""
    delivery = await load(session, delivery_id)
    if delivery.status != DeliveryStatus.finished:
        raise DeliveryNotFinished(
            f"The delivery is {delivery.status}: its messages exist once it is finished "
            "(confirm it first).",
            delivery_status=delivery.status,
        )
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    return MessageSource(delivery, coupon_set, compiled(delivery))


async def _messages(pool: asyncpg.Pool, source: MessageSource) -> AsyncIterator[dict[str, Any]]:
    """Each message in list order, read in pages of short queries (no long transaction)."""
    delivery, coupon_set = source.delivery, source.coupon_set
    after = 0
    last_seq = delivery.last_seq or 0
    query = sql.MESSAGES_SHARED if delivery.pool_id is None else sql.MESSAGES_UNIQUE
    extra = coupon_set.shared_code if delivery.pool_id is None else delivery.pool_id
    while after < last_seq:
        rows = await pool.fetch(query, delivery.id, after, last_seq, MESSAGE_PAGE, extra)
        if not rows:
            break
        for row in rows:
            fields = json.loads(row["fields"]) if isinstance(row["fields"], str) else row["fields"]
            subject, body = source.compiled.render(
                _context(
                    coupon_set=coupon_set,
                    delivery=delivery,
                    recipient_id=row["recipient_id"],
                    address=row["address"],
                    fields=fields or {},
                    code=row["code"],
                )
            )
            yield {
                "recipient_id": row["recipient_id"],
                "address": row["address"],
                "code": row["code"],
                "subject": subject,
                "body": body,
            }
        after = rows[-1]["seq"]


async def export_messages(
    pool: asyncpg.Pool, source: MessageSource, *, format: Format
) -> AsyncIterator[str]:
    """The messages as CSV (with a header; formula-like cells neutralised) or JSON lines,
    in pieces of 500 messages."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if format == "csv":
        writer.writerow(FIELDS)
    count = 0
    async for message in _messages(pool, source):
        if format == "csv":
            writer.writerow([cell(message[f]) for f in FIELDS])
        else:
            buffer.write(json.dumps(message, ensure_ascii=False) + "\n")
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
    # Reached only once the server has sent the last piece (a client that goes away
    # closes the generator at a yield): the messages were read completely.
    await pool.execute(sql.MARK_SENT, source.delivery.id)
