"""A delivery as a record: load, list, the public view, create and change a draft.

Runs in the request's session (ORM only)."""

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import DeliveryNotEditable, NotFound, ValidationFailed
from app.models.api_key import ApiKey
from app.models.coupon_set import CouponSet, SetKind
from app.models.delivery import Delivery, DeliveryStatus
from app.models.pool import DEFAULT_POOL, Pool
from app.pagination import PageParams, paginate
from app.schemas.delivery import DeliveryCreate, DeliveryPublic, DeliveryUpdate
from app.schemas.mappers import delivery_public
from app.services import coupon_sets, pools
from app.services.coupon_sets import parse_id
from app.services.deliveries.templates import Compiled

EDITABLE = (DeliveryStatus.draft, DeliveryStatus.analyzed)


def key(delivery_id: str) -> uuid.UUID:
    """The delivery's id; anything else names no delivery."""
    parsed = parse_id(delivery_id)
    if parsed is None:
        raise NotFound(f"No delivery has the id '{delivery_id}'.")
    return parsed


async def load(session: AsyncSession, delivery_id: str, *, lock: bool = False) -> Delivery:
    stmt = select(Delivery).where(Delivery.id == key(delivery_id))
    if lock:
        stmt = stmt.with_for_update()
    delivery = (await session.execute(stmt)).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"No delivery has the id '{delivery_id}'.")
    return delivery


async def get_delivery(session: AsyncSession, delivery_id: str) -> Delivery:
    return await load(session, delivery_id)


async def _names(session: AsyncSession, delivery: Delivery) -> tuple[str, str | None]:
    """The set's key and the pool's name, for the public view."""
    set_key = await session.scalar(
        select(CouponSet.key).where(CouponSet.id == delivery.coupon_set_id)
    )
    pool = None
    if delivery.pool_id is not None:
        pool = await session.scalar(select(Pool.name).where(Pool.id == delivery.pool_id))
    return set_key or "", pool


async def public_of(session: AsyncSession, delivery: Delivery) -> DeliveryPublic:
    set_key, pool = await _names(session, delivery)
    return delivery_public(delivery, set_key=set_key, pool=pool)


async def list_deliveries(
    session: AsyncSession,
    *,
    coupon_set_ref: str | None,
    status: DeliveryStatus | None,
    params: PageParams,
) -> list[tuple[Delivery, str, str | None]]:
    stmt = (
        select(Delivery, CouponSet.key, Pool.name)
        .join(CouponSet, CouponSet.id == Delivery.coupon_set_id)
        .outerjoin(Pool, Pool.id == Delivery.pool_id)
    )
    if coupon_set_ref is not None:
        coupon_set = await coupon_sets.get_coupon_set(session, coupon_set_ref)
        stmt = stmt.where(Delivery.coupon_set_id == coupon_set.id)
    if status is not None:
        stmt = stmt.where(Delivery.status == status.value)
    page: Select[Any] = paginate(stmt, Delivery, params)  # type: ignore[arg-type]
    rows = await session.execute(page)
    return [(row[0], row[1], row[2]) for row in rows.all()]


def compiled(delivery: Delivery) -> Compiled:
    """The delivery's subject and body, checked and ready to render."""
    return Compiled(
        subject=delivery.subject,
        body=delivery.template,
        html=delivery.content_type == "html",
    )


async def create_delivery(
    session: AsyncSession, *, data: DeliveryCreate, actor: ApiKey
) -> tuple[Delivery, str, str | None]:
    coupon_set = await coupon_sets.get_coupon_set(session, data.coupon_set_id)
    pool: Pool | None = None
    if coupon_set.kind == SetKind.unique:
        pool = await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool or DEFAULT_POOL)
    elif data.pool is not None:
        await pools.get_pool(session, coupon_set=coupon_set, ref=data.pool)  # refuses
    delivery = Delivery(
        label=data.label,
        coupon_set_id=coupon_set.id,
        pool_id=pool.id if pool else None,
        channel=data.channel.value,
        subject=data.subject,
        template=data.template,
        content_type=data.content_type.value,
        status=DeliveryStatus.draft.value,
        message_limit=data.message_limit,
        metadata_=data.metadata,
        api_key_id=actor.id,
        recipient_count=0,
        processed=0,
        assigned=0,
        kept=0,
        failed_messages=0,
    )
    compiled(delivery)  # a template error is refused before anything is stored
    session.add(delivery)
    await session.flush()
    await session.refresh(delivery)
    return delivery, coupon_set.key, pool.name if pool else None


def ensure_editable(delivery: Delivery) -> None:
    if delivery.status not in EDITABLE:
        raise DeliveryNotEditable(
            f"The delivery is {delivery.status}; only a draft or analysed delivery changes. "
            "Create a new delivery instead.",
            delivery_status=delivery.status,
        )


async def update_delivery(
    session: AsyncSession, *, delivery_id: str, data: DeliveryUpdate
) -> Delivery:
    delivery = await load(session, delivery_id, lock=True)
    ensure_editable(delivery)
    for name in data.model_fields_set:
        value = getattr(data, name)
        if name in ("label", "metadata", "content_type", "channel") and value is None:
            raise ValidationFailed(f"{name} cannot be null.")
        attribute = "metadata_" if name == "metadata" else name
        setattr(delivery, attribute, getattr(value, "value", value))
    compiled(delivery)
    delivery.status = DeliveryStatus.draft.value
    delivery.analysis = None
    await session.flush()
    await session.refresh(delivery)
    return delivery
