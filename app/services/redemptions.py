"""Redemptions: redeem, validate, hold → confirm/release, roll back. Limits are exact.

Exactness comes from a row lock taken before the limits are read: the code's row for a
unique code, the set's row for a shared code. Concurrent redemptions of the same code
queue on that lock (and only on it), so each sees the uses committed before it."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    AlreadyRedeemed,
    AmbiguousCode,
    AppError,
    Conflict,
    HoldExpired,
    InvalidRedemptionState,
    MaxUsesReached,
    NotFound,
    RecipientMismatch,
    UnknownCode,
    ValidationFailed,
    Voided,
)
from app.models.api_key import ApiKey
from app.models.assignment import SharedAssignment
from app.models.audit import AuditAction
from app.models.code import Code, CodeStatus, normalise
from app.models.coupon_set import CouponSet, MatchMode, SetKind
from app.models.redemption import Redemption, RedemptionStatus
from app.schemas.redemption import RedemptionPublic, RedemptionRequest, ValidationResult
from app.services import audit
from app.services.assignments import ensure_usable


def _active() -> ColumnElement[bool]:
    """Uses that count against limits: redeemed, or held and not yet expired."""
    return or_(
        Redemption.status == RedemptionStatus.redeemed.value,
        and_(
            Redemption.status == RedemptionStatus.held.value,
            Redemption.hold_expires_at > func.now(),
        ),
    )


@dataclass
class _Target:
    coupon_set: CouponSet
    code: Code | None  # None for a shared set

    @property
    def text(self) -> str:
        return self.code.code if self.code else (self.coupon_set.shared_code or "")


def _matches(coupon_set: CouponSet, lookup: str | None, *, exact: str, loose: str) -> bool:
    return lookup == (exact if coupon_set.match_mode == MatchMode.exact else loose)


async def _find(session: AsyncSession, *, code: str, set_ref: str | None) -> _Target:
    """The one set (and code row) that holds ``code``. Unknown codes, and codes of a set
    other than the one named, are the same 404: nothing tells them apart."""
    exact, loose = code.strip(), normalise(code, exact=False)
    lookups = {exact, loose}
    found: list[_Target] = []
    unique = await session.execute(
        select(Code, CouponSet)
        .join(CouponSet, CouponSet.id == Code.set_id)
        .where(Code.lookup.in_(lookups))
    )
    for row, coupon_set in unique.all():
        if _matches(coupon_set, row.lookup, exact=exact, loose=loose):
            found.append(_Target(coupon_set, row))
    shared = await session.execute(
        select(CouponSet).where(
            CouponSet.kind == SetKind.shared.value, CouponSet.shared_lookup.in_(lookups)
        )
    )
    for coupon_set in shared.scalars():
        if _matches(coupon_set, coupon_set.shared_lookup, exact=exact, loose=loose):
            found.append(_Target(coupon_set, None))
    if set_ref is not None:
        ref = set_ref.lower()
        found = [t for t in found if ref in (str(t.coupon_set.id), t.coupon_set.key.lower())]
    if not found:
        raise UnknownCode("No coupon set holds this code.")
    if len(found) > 1:
        raise AmbiguousCode(
            "Several coupon sets hold this code; send `set` with the id or key of one.",
            sets=sorted(t.coupon_set.key for t in found),
        )
    return found[0]


async def _lock(session: AsyncSession, target: _Target) -> None:
    if target.code is not None:
        await session.execute(
            select(Code)
            .where(Code.id == target.code.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    else:
        await session.execute(
            select(CouponSet)
            .where(CouponSet.id == target.coupon_set.id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )


async def _count_active(session: AsyncSession, *conditions: ColumnElement[bool]) -> int:
    return await session.scalar(select(func.count()).where(_active(), *conditions)) or 0


async def _check(
    session: AsyncSession, target: _Target, data: RedemptionRequest, at: datetime
) -> int | None:
    """Raise the refusal a redemption would get; return the uses left (shared, limited)."""
    coupon_set = target.coupon_set
    ensure_usable(coupon_set, at=at)
    if target.code is not None:
        code = target.code
        if code.status == CodeStatus.void:
            raise Voided(f"The code '{code.code}' was voided.")
        if await _count_active(session, Redemption.code_id == code.id):
            raise AlreadyRedeemed(f"The code '{code.code}' has been used.")
        if (
            coupon_set.bind_to_recipient
            and code.recipient_id is not None
            and (data.recipient_id != code.recipient_id)
        ):
            raise RecipientMismatch("The code was given to another recipient.")
        return None
    if coupon_set.bind_to_recipient:
        assigned = await session.scalar(
            select(func.count()).where(
                SharedAssignment.set_id == coupon_set.id,
                SharedAssignment.recipient_id == data.recipient_id,
            )
        )
        if not assigned:
            raise RecipientMismatch("The code was not given to this recipient.")
    if coupon_set.per_recipient_limit is not None:
        if data.recipient_id is None:
            raise ValidationFailed(
                "This set limits uses per recipient: send recipient_id.",
                errors=[
                    {
                        "loc": ["body", "recipient_id"],
                        "message": "required by this set",
                        "type": "missing",
                    }
                ],
            )
        used = await _count_active(
            session,
            Redemption.set_id == coupon_set.id,
            Redemption.recipient_id == data.recipient_id,
        )
        if used >= coupon_set.per_recipient_limit:
            raise MaxUsesReached(
                f"This recipient has used the code {used} times, the most allowed.",
                limit="per_recipient",
            )
    if coupon_set.max_uses is None:
        return None
    used = await _count_active(session, Redemption.set_id == coupon_set.id)
    if used >= coupon_set.max_uses:
        raise MaxUsesReached(
            f"The code has been used {used} times, the most allowed.", limit="max_uses"
        )
    return coupon_set.max_uses - used


def public(redemption: Redemption, coupon_set_key: str) -> RedemptionPublic:
    status = RedemptionStatus(redemption.status)
    if (
        status is RedemptionStatus.held
        and redemption.hold_expires_at is not None
        and redemption.hold_expires_at <= datetime.now(UTC)
    ):
        status = RedemptionStatus.expired
    return RedemptionPublic(
        id=redemption.id,
        code=redemption.code,
        set_id=redemption.set_id,
        set_key=coupon_set_key,
        status=status,
        recipient_id=redemption.recipient_id,
        order_id=redemption.order_id,
        amount=redemption.amount,
        redeemed_at=redemption.redeemed_at,
        hold_expires_at=redemption.hold_expires_at,
        settled_at=redemption.settled_at,
    )


async def validate(session: AsyncSession, *, data: RedemptionRequest) -> ValidationResult:
    """What a redemption would do now, changing nothing."""
    try:
        target = await _find(session, code=data.code, set_ref=data.set)
    except UnknownCode as refusal:
        return ValidationResult(
            valid=False,
            reason=refusal.slug,
            detail=refusal.detail,
            code=data.code,
            set_id=None,
            set_key=None,
            remaining_uses=None,
        )
    at = data.redeemed_at or datetime.now(UTC)
    try:
        remaining = await _check(session, target, data, at)
    except (Conflict, ValidationFailed) as refusal:
        return ValidationResult(
            valid=False,
            reason=refusal.slug,
            detail=refusal.detail,
            code=target.text,
            set_id=target.coupon_set.id,
            set_key=target.coupon_set.key,
            remaining_uses=None,
        )
    return ValidationResult(
        valid=True,
        reason=None,
        detail=None,
        code=target.text,
        set_id=target.coupon_set.id,
        set_key=target.coupon_set.key,
        remaining_uses=remaining,
    )


async def redeem(
    session: AsyncSession,
    *,
    data: RedemptionRequest,
    actor: ApiKey,
    idempotency_key: str | None,
) -> RedemptionPublic:
    target = await _find(session, code=data.code, set_ref=data.set)
    await _lock(session, target)
    now = datetime.now(UTC)
    at = data.redeemed_at or now
    await _check(session, target, data, at)
    held = data.hold_seconds is not None
    code = target.code
    redemption = Redemption(
        id=uuid.uuid4(),
        set_id=target.coupon_set.id,
        code_id=code.id if code else None,
        code=target.text,
        status=(RedemptionStatus.held if held else RedemptionStatus.redeemed).value,
        recipient_id=data.recipient_id or (code.recipient_id if code else None),
        order_id=data.order_id,
        amount=data.amount,
        redeemed_at=at,
        hold_expires_at=now + timedelta(seconds=data.hold_seconds) if data.hold_seconds else None,
    )
    session.add(redemption)
    if code is not None and not held:
        code.status = CodeStatus.redeemed.value
        code.redeemed_at = at
    await session.flush()
    await audit.record(
        session,
        action=AuditAction.hold if held else AuditAction.redeem,
        actor=actor,
        set_id=target.coupon_set.id,
        code=target.text,
        recipient_id=redemption.recipient_id,
        idempotency_key=idempotency_key,
        details={"redemption_id": str(redemption.id), "order_id": data.order_id},
    )
    return public(redemption, target.coupon_set.key)


async def _locked(session: AsyncSession, redemption_id: uuid.UUID) -> tuple[Redemption, CouponSet]:
    row = (
        await session.execute(
            select(Redemption, CouponSet)
            .join(CouponSet, CouponSet.id == Redemption.set_id)
            .where(Redemption.id == redemption_id)
            .with_for_update(of=Redemption)
        )
    ).first()
    if row is None:
        raise NotFound(f"No redemption has the id {redemption_id}.")
    return row[0], row[1]


async def get_redemption(session: AsyncSession, redemption_id: uuid.UUID) -> RedemptionPublic:
    row = (
        await session.execute(
            select(Redemption, CouponSet.key)
            .join(CouponSet, CouponSet.id == Redemption.set_id)
            .where(Redemption.id == redemption_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"No redemption has the id {redemption_id}.")
    return public(row[0], row[1])


async def _code_row(session: AsyncSession, redemption: Redemption) -> Code | None:
    if redemption.code_id is None:
        return None
    return (
        await session.execute(select(Code).where(Code.id == redemption.code_id).with_for_update())
    ).scalar_one()


async def settle(
    session: AsyncSession,
    *,
    redemption_id: uuid.UUID,
    action: AuditAction,
    actor: ApiKey,
    idempotency_key: str | None,
) -> RedemptionPublic:
    """Confirm or release a hold, or roll back a redemption."""
    redemption, coupon_set = await _locked(session, redemption_id)
    now = datetime.now(UTC)
    expired = redemption.hold_expires_at is not None and redemption.hold_expires_at <= now
    state = RedemptionStatus(redemption.status)
    refusal: AppError | None = None
    if action is AuditAction.rollback and state is not RedemptionStatus.redeemed:
        refusal = InvalidRedemptionState(
            "Only a redemption can be rolled back"
            + (
                ": it was rolled back already."
                if state is RedemptionStatus.rolled_back
                else f"; this one is {state.value} (release a hold instead)."
            )
        )
    elif (
        action in (AuditAction.confirm, AuditAction.release) and state is not RedemptionStatus.held
    ):
        refusal = InvalidRedemptionState(f"Only a hold can be settled; this one is {state.value}.")
    elif action is AuditAction.confirm and expired:
        refusal = HoldExpired("The hold expired; redeem the code again.")
    if refusal is not None:
        raise refusal
    code = await _code_row(session, redemption)
    if action is AuditAction.confirm:
        redemption.status = RedemptionStatus.redeemed.value
        if code is not None:
            code.status = CodeStatus.redeemed.value
            code.redeemed_at = redemption.redeemed_at
    elif action is AuditAction.release:
        redemption.status = RedemptionStatus.released.value
    else:
        redemption.status = RedemptionStatus.rolled_back.value
        if code is not None:
            code.status = (
                CodeStatus.assigned if code.recipient_id is not None else CodeStatus.available
            ).value
            code.redeemed_at = None
    redemption.settled_at = now
    await session.flush()
    await audit.record(
        session,
        action=action,
        actor=actor,
        set_id=coupon_set.id,
        code=redemption.code,
        recipient_id=redemption.recipient_id,
        idempotency_key=idempotency_key,
        details={"redemption_id": str(redemption.id)},
    )
    return public(redemption, coupon_set.key)
