"""One recipient across every set: the coupons they hold, and what happened to them.

Both lists are keyset pages read through indexes that begin with the recipient
(docs/insight.md), so a page costs the same for a recipient with three coupons as for one
with thousands, among any number of rows: the coupons from ix_codes_recipient_id and
ix_shared_assignments_recipient_id, the activity from ix_audit_events_recipient_id and
ix_redemptions_recipient_holds. Each source is read for one page at most and the sources
are merged here. An unknown recipient has empty lists: recipients are the caller's ids,
not rows of ours."""

import heapq
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    Boolean,
    String,
    Uuid,
    and_,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.assignment import SharedAssignment
from app.models.audit import AuditAction, AuditEvent
from app.models.code import Code, CodeStatus, normalise
from app.models.coupon_set import CouponSet, MatchMode, SetKind
from app.models.pool import Pool
from app.models.redemption import Redemption
from app.pagination import (
    INSTANT_PART,
    INT_PART,
    UUID_PART,
    PageParams,
    decode_key_cursor,
    encode_key_cursor,
    instant_part,
    parse_instant,
    parse_uuid,
)
from app.schemas.recipient import (
    ActivityAction,
    ActivityEvent,
    ActivityPage,
    RecipientCoupon,
    RecipientCouponPage,
)

# The audited actions that concern a recipient's coupon, as the activity names them. A
# delivery's reported failure (`unassign`) gives the code back like a return does.
ACTIVITY = {
    AuditAction.assign: ActivityAction.assigned,
    AuditAction.redeem: ActivityAction.redeemed,
    AuditAction.hold: ActivityAction.held,
    AuditAction.confirm: ActivityAction.hold_confirmed,
    AuditAction.release: ActivityAction.hold_released,
    AuditAction.rollback: ActivityAction.rolled_back,
    AuditAction.return_: ActivityAction.returned,
    AuditAction.unassign: ActivityAction.returned,
    AuditAction.void: ActivityAction.voided,
}
_SETTLEMENTS = {AuditAction.confirm.value, AuditAction.release.value, AuditAction.rollback.value}

# Sources of the activity, in the order of events that share a moment (newest first).
_AUDIT, _HOLD = 1, 0
# The lists' cursors: (set id, row id); (moment, source, the audit row's id or the hold's).
COUPONS_CURSOR = rf"^{UUID_PART}\.{INT_PART}$"
ACTIVITY_CURSOR = rf"^{INSTANT_PART}\.(?:{_AUDIT}\.{INT_PART}|{_HOLD}\.{UUID_PART})$"

# A hold that ran out: still `held` (a unique code's hold stays so), `expired` (a shared
# code's, given back), or released after its end. A hold confirmed or released in time
# ends before its expiry; an expiry writes no row, so it is read from the redemption.
# Literal statuses: a partial index serves only a query whose text implies its predicate.
_EXPIRED_HOLD = or_(
    literal_column("redemptions.status IN ('held', 'expired')", Boolean),
    and_(
        literal_column("redemptions.status = 'released'", Boolean),
        Redemption.settled_at >= Redemption.hold_expires_at,
    ),
)


class _SetFacts(NamedTuple):
    key: str
    label: str
    kind: str
    match_mode: str
    shared_code: str | None
    valid_until: datetime | None


async def _sets(session: AsyncSession, set_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, _SetFacts]:
    ids = set(set_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(
            CouponSet.id,
            CouponSet.key,
            CouponSet.label,
            CouponSet.kind,
            CouponSet.match_mode,
            CouponSet.shared_code,
            CouponSet.valid_until,
        ).where(CouponSet.id.in_(ids))
    )
    return {row.id: _SetFacts(*row[1:]) for row in rows}


async def _pool_names(session: AsyncSession, pool_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = set(pool_ids)
    if not ids:
        return {}
    rows = await session.execute(select(Pool.id, Pool.name).where(Pool.id.in_(ids)))
    return dict(rows.all())


class _Held(NamedTuple):
    """One row of either source of a recipient's coupons, with its place in the list."""

    set_id: uuid.UUID
    id: int
    row: Any
    unique: bool


async def list_coupons(
    session: AsyncSession, *, recipient_id: str, params: PageParams
) -> RecipientCouponPage:
    """Every code and shared assignment the recipient holds, grouped by set (in set id
    order), within a set in the order the codes were added or the assignments made. A
    set's rows all live in one table, so (set_id, id) orders both tables as one list."""
    after = (
        decode_key_cursor(params.cursor, COUPONS_CURSOR, parse_uuid, int)
        if params.cursor is not None
        else None
    )
    codes = select(
        Code.set_id,
        Code.id,
        Code.code,
        Code.status,
        Code.pool_id,
        Code.assigned_at,
        Code.channel,
        Code.address,
        Code.delivery_id,
        Code.redeemed_at,
    ).where(Code.recipient_id == recipient_id)
    shared = select(
        SharedAssignment.set_id,
        SharedAssignment.id,
        SharedAssignment.assigned_at,
        SharedAssignment.channel,
        SharedAssignment.address,
        SharedAssignment.delivery_id,
    ).where(SharedAssignment.recipient_id == recipient_id)
    if after is not None:
        codes = codes.where(tuple_(Code.set_id, Code.id) > tuple_(*after))
        shared = shared.where(tuple_(SharedAssignment.set_id, SharedAssignment.id) > tuple_(*after))
    wanted = params.limit + 1
    code_rows = await session.execute(codes.order_by(Code.set_id, Code.id).limit(wanted))
    shared_rows = await session.execute(
        shared.order_by(SharedAssignment.set_id, SharedAssignment.id).limit(wanted)
    )
    held = list(
        heapq.merge(
            [_Held(r.set_id, r.id, r, True) for r in code_rows],
            [_Held(r.set_id, r.id, r, False) for r in shared_rows],
            key=lambda h: (h.set_id, h.id),
        )
    )
    page = held[: params.limit]
    sets = await _sets(session, (h.set_id for h in page))
    pools = await _pool_names(session, (h.row.pool_id for h in page if h.unique))
    redeemed = await _shared_redeemed(
        session, recipient_id=recipient_id, set_ids={h.set_id for h in page if not h.unique}
    )
    more = len(held) > params.limit
    return RecipientCouponPage(
        items=[_coupon(h, sets[h.set_id], pools, redeemed) for h in page],
        next_cursor=encode_key_cursor(page[-1].set_id.hex, page[-1].id) if more else None,
    )


async def _shared_redeemed(
    session: AsyncSession, *, recipient_id: str, set_ids: set[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """The recipient's latest redemption that counts of each shared set's code
    (ix_redemptions_active_set: set, recipient)."""
    if not set_ids:
        return {}
    rows = await session.execute(
        select(Redemption.set_id, func.max(Redemption.redeemed_at))
        .where(
            Redemption.set_id.in_(set_ids),
            Redemption.recipient_id == recipient_id,
            literal_column("redemptions.status = 'redeemed'", Boolean),
        )
        .group_by(Redemption.set_id)
    )
    return dict(rows.all())


def _coupon(
    held: _Held,
    facts: _SetFacts,
    pools: dict[uuid.UUID, str],
    redeemed: dict[uuid.UUID, datetime],
) -> RecipientCoupon:
    row = held.row
    if held.unique:
        code, status, redeemed_at = row.code, CodeStatus(row.status), row.redeemed_at
        pool: str | None = pools.get(row.pool_id)
    else:
        code, pool, redeemed_at = facts.shared_code or "", None, redeemed.get(held.set_id)
        status = CodeStatus.redeemed if redeemed_at else CodeStatus.assigned
    return RecipientCoupon(
        set_id=held.set_id,
        set_key=facts.key,
        set_label=facts.label,
        kind=SetKind(facts.kind),
        pool=pool,
        code=code,
        status=status,
        assigned_at=row.assigned_at,
        channel=row.channel,
        address=row.address,
        delivery_id=row.delivery_id,
        redeemed_at=redeemed_at,
        valid_until=facts.valid_until,
    )


class _Event(NamedTuple):
    """One event of either source of the activity, with its place in the list."""

    at: datetime
    source: int
    id: Any  # the audit row's id, or the hold's (a redemption's uuid)
    row: Any


async def list_activity(
    session: AsyncSession, *, recipient_id: str, params: PageParams
) -> ActivityPage:
    """What happened to the recipient's coupons, newest first: the audited actions
    (ix_audit_events_recipient_id), and the holds that ran out (ix_redemptions_recipient_holds),
    at their end. Events of one moment: audited ones first, then by id, descending."""
    after = (
        decode_key_cursor(params.cursor, ACTIVITY_CURSOR, parse_instant, int, str)
        if params.cursor is not None
        else None
    )
    audited = select(
        AuditEvent.id,
        AuditEvent.created_at,
        AuditEvent.action,
        AuditEvent.set_id,
        AuditEvent.code,
        AuditEvent.details,
    ).where(
        AuditEvent.recipient_id == recipient_id,
        AuditEvent.action.in_([action.value for action in ACTIVITY]),
    )
    expired = select(
        Redemption.id,
        Redemption.hold_expires_at,
        Redemption.set_id,
        Redemption.code_id,
        Redemption.code,
        Redemption.order_id,
    ).where(
        Redemption.recipient_id == recipient_id,
        Redemption.hold_expires_at <= func.now(),
        _EXPIRED_HOLD,
    )
    if after is not None:
        at, source, key = after
        if source == _AUDIT:
            audited = audited.where(
                tuple_(AuditEvent.created_at, AuditEvent.id) < tuple_(at, int(key))
            )
            expired = expired.where(Redemption.hold_expires_at <= at)
        else:
            audited = audited.where(AuditEvent.created_at < at)
            expired = expired.where(
                tuple_(Redemption.hold_expires_at, Redemption.id) < tuple_(at, parse_uuid(key))
            )
    wanted = params.limit + 1
    audit_rows = await session.execute(
        audited.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(wanted)
    )
    # The page of holds first, in index order, then their codes' pools.
    holds = (
        expired.order_by(Redemption.hold_expires_at.desc(), Redemption.id.desc())
        .limit(wanted)
        .subquery()
    )
    hold_rows = await session.execute(
        select(holds, Pool.name.label("pool"))
        .select_from(holds)
        .outerjoin(Code, Code.id == holds.c.code_id)
        .outerjoin(Pool, Pool.id == Code.pool_id)
        .order_by(holds.c.hold_expires_at.desc(), holds.c.id.desc())
    )
    events = list(
        heapq.merge(
            [_Event(r.created_at, _AUDIT, r.id, r) for r in audit_rows],
            [_Event(r.hold_expires_at, _HOLD, r.id, r) for r in hold_rows],
            key=lambda e: (e.at, e.source, e.id),
            reverse=True,
        )
    )
    page = events[: params.limit]
    items = await _activity_items(session, page)
    more = len(events) > params.limit
    last = page[-1] if more else None
    return ActivityPage(
        items=items,
        next_cursor=(
            encode_key_cursor(
                instant_part(last.at),
                last.source,
                last.id.hex if isinstance(last.id, uuid.UUID) else last.id,
            )
            if last is not None
            else None
        ),
    )


async def _activity_items(session: AsyncSession, page: Sequence[_Event]) -> list[ActivityEvent]:
    """The page's events with what their rows do not hold: the set's key, the pool of a
    unique code (found by its lookup, uq_codes_set_id_lookup) and a settlement's order
    (the redemption, by its id)."""
    sets = await _sets(session, (e.row.set_id for e in page))
    audited = [e.row for e in page if e.source == _AUDIT]
    redemption_ids: set[uuid.UUID] = set()
    wanted: set[tuple[uuid.UUID, str]] = set()
    for row in audited:
        details = row.details or {}
        if row.action in _SETTLEMENTS and details.get("redemption_id"):
            redemption_ids.add(uuid.UUID(details["redemption_id"]))
        facts = sets.get(row.set_id)
        if facts and facts.kind == SetKind.unique and row.code and "pool" not in details:
            exact = facts.match_mode == MatchMode.exact
            wanted.add((row.set_id, normalise(row.code, exact=exact)))
    orders: dict[uuid.UUID, str | None] = {}
    if redemption_ids:
        found = await session.execute(
            select(Redemption.id, Redemption.order_id).where(Redemption.id.in_(redemption_ids))
        )
        orders = dict(found.all())
    pools = await _pools_by_lookup(session, wanted)
    items = []
    for event in page:
        row = event.row
        facts = sets.get(row.set_id)
        if event.source == _HOLD:
            items.append(
                ActivityEvent(
                    at=event.at,
                    action=ActivityAction.hold_expired,
                    set_id=row.set_id,
                    set_key=facts.key if facts else None,
                    code=row.code,
                    pool=row.pool,
                    delivery_id=None,
                    order_id=row.order_id,
                    redemption_id=row.id,
                )
            )
            continue
        details = row.details or {}
        redemption = details.get("redemption_id")
        pool = details.get("pool")
        if pool is None and facts and facts.kind == SetKind.unique and row.code:
            exact = facts.match_mode == MatchMode.exact
            pool = pools.get((row.set_id, normalise(row.code, exact=exact)))
        redemption_id = uuid.UUID(redemption) if redemption else None
        items.append(
            ActivityEvent(
                at=event.at,
                action=ACTIVITY[AuditAction(row.action)],
                set_id=row.set_id,
                set_key=facts.key if facts else None,
                code=row.code,
                pool=pool,
                delivery_id=details.get("delivery_id"),
                order_id=details.get(
                    "order_id", orders.get(redemption_id) if redemption_id else None
                ),
                redemption_id=redemption_id,
            )
        )
    return items


async def _pools_by_lookup(
    session: AsyncSession, wanted: set[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], str]:
    """The pool of each (set, code lookup): one probe of uq_codes_set_id_lookup each (as
    pairs unnested and joined; an IN of pairs becomes an OR that only a bitmap serves)."""
    if not wanted:
        return {}
    pairs = (
        func.unnest(
            literal([set_id for set_id, _ in wanted], ARRAY(Uuid)),
            literal([lookup for _, lookup in wanted], ARRAY(String)),
        )
        .table_valued("set_id", "lookup")
        .render_derived(name="pairs")
    )
    found = await session.execute(
        select(Code.set_id, Code.lookup, Pool.name)
        .select_from(pairs)
        .join(Code, and_(Code.set_id == pairs.c.set_id, Code.lookup == pairs.c.lookup))
        .join(Pool, Pool.id == Code.pool_id)
    )
    return {(set_id, lookup): name for set_id, lookup, name in found}
