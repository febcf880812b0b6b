"""The audit trail: written inside the transaction of the change it records."""

import uuid
from typing import Any

from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models.api_key import ApiKey
from app.models.audit import AuditAction, AuditEvent
from app.pagination import PageParams, decode_id_cursor


async def record(
    session: AsyncSession,
    *,
    action: AuditAction,
    actor: ApiKey | None,
    set_id: uuid.UUID | None,
    code: str | None = None,
    recipient_id: str | None = None,
    idempotency_key: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(AuditEvent).values(
            set_id=set_id,
            action=action.value,
            code=code,
            recipient_id=recipient_id,
            api_key_id=actor.id if actor else None,
            idempotency_key=idempotency_key,
            details=details,
        )
    )


async def list_events(
    session: AsyncSession,
    *,
    set_id: uuid.UUID,
    action: AuditAction | None,
    code: str | None,
    recipient_id: str | None = None,
    params: PageParams,
) -> list[AuditEvent]:
    """Newest first. With a recipient, that recipient's events are read first, all of them
    (ix_audit_events_recipient_id), then this set's are kept: a recipient has a few
    thousand events at most beside a set's millions. A MATERIALIZED CTE keeps the
    planner from intersecting that index with the set's (a BitmapAnd over every event of
    the set)."""
    events: Any = AuditEvent
    if recipient_id is not None:
        events = aliased(
            AuditEvent,
            select(AuditEvent)
            .where(AuditEvent.recipient_id == recipient_id)
            .cte("recipient_events")
            .prefix_with("MATERIALIZED"),
        )
    stmt = select(events).where(events.set_id == set_id)
    if action is not None:
        stmt = stmt.where(events.action == action.value)
    if code is not None:
        stmt = stmt.where(events.code == code)
    if params.cursor is not None:
        stmt = stmt.where(events.id < decode_id_cursor(params.cursor))
    stmt = stmt.order_by(events.id.desc()).limit(params.limit + 1)
    return list((await session.execute(stmt)).scalars())


async def ever_assigned(session: AsyncSession, *, set_id: uuid.UUID) -> bool:
    """Whether any code of the set was ever handed out: the trail remembers."""
    assigned = exists().where(
        AuditEvent.set_id == set_id, AuditEvent.action == AuditAction.assign.value
    )
    return bool(await session.scalar(select(assigned)))
