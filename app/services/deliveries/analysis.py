"""The pre-send analysis: how many messages, who keeps a code they hold, and whether
the free codes are enough.

The counts are asyncpg statements (sql.py) on a plain connection, so that the confirm
can run the same analysis again on its own connection, in the transaction that starts
it. ``analyze`` runs them on the asyncpg connection under the request's session
(``session_driver``), inside the request's transaction."""

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_driver
from app.models.coupon_set import CouponSet
from app.models.delivery import Delivery, DeliveryStatus
from app.schemas.delivery import Analysis, PoolAvailability
from app.services.deliveries import sql
from app.services.deliveries.drafts import EDITABLE, load


@dataclass(frozen=True)
class Plan:
    targets: int
    messages: int
    last_seq: int
    holding: int


async def plan(connection: asyncpg.Connection, delivery: Delivery) -> Plan:
    """Who gets a message (up to ``last_seq``) and how many of them hold a code already."""
    targets = delivery.recipient_count  # kept with the list, under the delivery's lock
    limit = delivery.message_limit
    messages = targets if limit is None else min(limit, targets)
    last_seq = 0
    if messages > 0:
        last_seq = int(await connection.fetchval(sql.LAST_SEQ, delivery.id, messages - 1))
    if delivery.pool_id is None:
        holding = await connection.fetchval(
            sql.HOLDING_SHARED, delivery.id, last_seq, delivery.coupon_set_id
        )
    else:
        holding = await connection.fetchval(
            sql.HOLDING_CODE, delivery.id, last_seq, delivery.pool_id
        )
    return Plan(targets=targets, messages=messages, last_seq=last_seq, holding=int(holding))


async def report(
    connection: asyncpg.Connection, delivery: Delivery, coupon_set: CouponSet, plan: Plan
) -> Analysis:
    """The plan against the free codes of the set's pools, with a log in words."""
    log = [
        f"{plan.targets} targets in the list.",
        f"Message limit {delivery.message_limit}: {plan.messages} messages."
        if delivery.message_limit is not None
        else f"No message limit: {plan.messages} messages.",
    ]
    per_pool: list[PoolAvailability] = []
    available = needed = used_up = 0
    if delivery.pool_id is None:
        log.append(f"The set '{coupon_set.key}' is shared: every message gets its one code.")
        available, needed, used_up = await _shared_uses(connection, delivery, coupon_set, plan)
        if coupon_set.max_uses is None:
            log.append("It has no max_uses: every message can be used.")
        else:
            log.append(
                f"{coupon_set.max_uses - available} of its {coupon_set.max_uses} uses are "
                f"taken: {available} left for {needed} messages."
            )
        if used_up:
            log.append(
                f"{used_up} targets used the code {coupon_set.per_recipient_limit} times "
                "already (its per_recipient_limit): their messages would bring a code they "
                "cannot use."
            )
    else:
        rows = await connection.fetch(sql.FREE_PER_POOL, coupon_set.id)
        per_pool = [PoolAvailability(pool=r["name"], available=r["available"]) for r in rows]
        own = next(r for r in rows if r["id"] == delivery.pool_id)
        available = int(own["available"])
        needed = plan.messages - plan.holding
        log.append(
            f"{plan.holding} of them already hold a code of the pool '{own['name']}' and "
            f"keep it; {needed} codes are needed."
        )
        log.append(f"{available} free codes in the pool '{own['name']}'.")
    shortfall = max(0, needed - available) + used_up
    if shortfall and delivery.pool_id is None:
        log.append(
            f"Not enough uses: {shortfall} missing. Raise max_uses, leave out the targets "
            "who used the code up, or set a lower message_limit."
        )
    elif shortfall:
        log.append(
            f"Not enough codes: {shortfall} missing. Add codes to the pool, or set a "
            f"message_limit of at most {plan.holding + available}."
        )
    else:
        log.append("Enough codes: the delivery can be confirmed.")
    return Analysis(
        targets=plan.targets,
        messages=plan.messages,
        message_limit=delivery.message_limit,
        already_holding=plan.holding,
        codes_needed=needed,
        codes_available=available,
        pools=per_pool,
        enough=shortfall == 0,
        shortfall=shortfall,
        log=log,
        analyzed_at=datetime.now(UTC),
    )


async def _shared_uses(
    connection: asyncpg.Connection, delivery: Delivery, coupon_set: CouponSet, plan: Plan
) -> tuple[int, int, int]:
    """For a shared set: the uses left, the uses the messages need (one each, holders of
    the code included: it is used when redeemed, not when given), and the targets whose
    per_recipient_limit is used up."""
    needed = plan.messages
    if coupon_set.max_uses is None:
        available = needed
    else:
        taken = int(await connection.fetchval(sql.SHARED_USES, coupon_set.id))
        available = max(0, coupon_set.max_uses - taken)
    used_up = 0
    if coupon_set.per_recipient_limit is not None and plan.messages:
        used_up = int(
            await connection.fetchval(
                sql.USED_UP_TARGETS,
                delivery.id,
                plan.last_seq,
                coupon_set.id,
                coupon_set.per_recipient_limit,
            )
        )
    return available, needed, used_up


async def analyze(session: AsyncSession, *, delivery_id: str) -> Delivery:
    delivery = await load(session, delivery_id, lock=True)
    coupon_set = await session.get_one(CouponSet, delivery.coupon_set_id)
    connection = await session_driver(session)
    result = await report(connection, delivery, coupon_set, await plan(connection, delivery))
    delivery.analysis = result.model_dump(mode="json")
    if delivery.status in EDITABLE:
        delivery.status = DeliveryStatus.analyzed.value
    await session.flush()
    await session.refresh(delivery)
    return delivery
