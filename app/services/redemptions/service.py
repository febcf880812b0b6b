"""Redemptions: redeem, validate, hold → confirm/release, roll back. Limits are exact.

The rules run in PostgreSQL, one statement per request (app/sql/, called through
engine/): a unique code is redeemed under its row's lock, a shared code under its set's
usage counter's, so concurrent redemptions of one code queue on that lock only and each
sees the uses committed before it, while the counter answers for a shared code in O(1)
however often it was used. This module turns a request into the statement's arguments
and the row that comes back into the answer or the refusal the API has always given.

Without an Idempotency-Key the statement runs on the plain asyncpg pool, as its own
transaction (``RedemptionEngine``); with one, in the request's transaction, because the
stored response must commit with the effect."""

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_driver
from app.errors import (
    AlreadyRedeemed,
    AmbiguousCode,
    AppError,
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
from app.models.audit import AuditAction
from app.models.code import normalise
from app.models.coupon_set import SetFacts
from app.models.redemption import RedemptionStatus
from app.schemas.mappers import redemption_public
from app.schemas.redemption import RedemptionPublic, RedemptionRequest, ValidationResult
from app.services.assignments import ensure_usable
from app.services.redemptions.engine import (
    Attempt,
    Check,
    RedemptionEngine,
    redeem_on,
    settle_on,
    validate_on,
)


def _lookups(data: RedemptionRequest) -> tuple[str, str, str | None]:
    """The code in both forms sets compare in (exact, normalised), and the set named."""
    return (
        data.code.strip(),
        normalise(data.code, exact=False),
        data.set.lower() if data.set is not None else None,
    )


def to_attempt(
    data: RedemptionRequest, *, api_key_id: uuid.UUID | None, idempotency_key: str | None
) -> Attempt:
    """The engine's arguments for a redemption request."""
    return Attempt(
        *_lookups(data),
        recipient_id=data.recipient_id,
        order_id=data.order_id,
        amount=data.amount,
        redeemed_at=data.redeemed_at,
        hold_seconds=data.hold_seconds,
        api_key_id=api_key_id,
        idempotency_key=idempotency_key,
    )


def to_check(data: RedemptionRequest) -> Check:
    """The engine's arguments for a validation request."""
    return Check(*_lookups(data), data.recipient_id, data.redeemed_at)


def _usable_refusal(row: Mapping[str, Any]) -> AppError:
    """The set's own refusal (archived, before or after its window), worded as for an
    assignment."""
    coupon_set = SetFacts(
        id=row["set_id"],
        key=row["set_key"],
        kind="",  # not read by ensure_usable
        status=row["set_status"],
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
    )
    try:
        ensure_usable(coupon_set, at=row["moment"])
    except AppError as refusal:
        return refusal
    raise AssertionError(f"the set was refused as {row['refusal']}, but is usable")


def _refusal(row: Mapping[str, Any]) -> AppError | None:
    """The problem a redemption gets for the engine's row, None if it went through."""
    match row["refusal"]:
        case None:
            return None
        case "unknown-code":
            return UnknownCode("No coupon set holds this code.")
        case "ambiguous-code":
            return AmbiguousCode(
                "Several coupon sets hold this code; send `set` with the id or key of one.",
                sets=sorted(row["sets"]),
            )
        case "set-archived" | "not-yet-valid" | "expired":
            return _usable_refusal(row)
        case "voided":
            return Voided(f"The code '{row['code']}' was voided.")
        case "already-redeemed":
            return AlreadyRedeemed(f"The code '{row['code']}' has been used.")
        case "recipient-mismatch":
            return RecipientMismatch("The code was given to another recipient.")
        case "not-given":
            return RecipientMismatch("The code was not given to this recipient.")
        case "recipient-required":
            return ValidationFailed(
                "This set limits uses per recipient: send recipient_id.",
                errors=[
                    {
                        "loc": ["body", "recipient_id"],
                        "message": "required by this set",
                        "type": "missing",
                    }
                ],
            )
        case "per-recipient-limit":
            return MaxUsesReached(
                f"This recipient has used the code {row['used']} times, the most allowed.",
                limit="per_recipient",
            )
        case "max-uses":
            return MaxUsesReached(
                f"The code has been used {row['used']} times, the most allowed.",
                limit="max_uses",
            )
    raise AssertionError(f"unknown refusal {row['refusal']!r}")


def validation(row: Mapping[str, Any], data: RedemptionRequest) -> ValidationResult:
    """The answer to a validation, from the engine's row (an ambiguous code is refused)."""
    refusal = _refusal(row)
    if isinstance(refusal, AmbiguousCode):
        raise refusal
    return ValidationResult(
        valid=refusal is None,
        reason=refusal.slug if refusal else None,
        detail=refusal.detail if refusal else None,
        code=row["code"] or data.code,
        set_id=row["set_id"],
        set_key=row["set_key"],
        remaining_uses=row["remaining"],
    )


def redemption(row: Mapping[str, Any], data: RedemptionRequest) -> RedemptionPublic:
    """The new redemption from the engine's row, or its refusal raised."""
    refusal = _refusal(row)
    if refusal is not None:
        raise refusal
    # What was sent is echoed as sent (an amount's scale, a time's offset), as always.
    return redemption_public(
        {
            **row,
            "order_id": data.order_id,
            "amount": data.amount,
            "redeemed_at": data.redeemed_at or row["redeemed_at"],
            "settled_at": None,
        }
    )


async def validate(
    session: AsyncSession, *, data: RedemptionRequest, engine: RedemptionEngine | None = None
) -> ValidationResult:
    """What a redemption would do now, changing nothing (and locking nothing)."""
    check = to_check(data)
    if engine is not None:
        row = await engine.validate(check)
    else:
        row = (await validate_on(await session_driver(session), [check]))[0]
    return validation(row, data)


async def redeem(
    session: AsyncSession,
    *,
    data: RedemptionRequest,
    actor: ApiKey,
    idempotency_key: str | None,
    engine: RedemptionEngine | None = None,
) -> RedemptionPublic:
    """A use of the code (held with ``hold_seconds``), its audit row included."""
    attempt = to_attempt(data, api_key_id=actor.id, idempotency_key=idempotency_key)
    if engine is not None and idempotency_key is None:
        row = await engine.redeem(attempt)
    else:
        row = (await redeem_on(await session_driver(session), [attempt]))[0]
    return redemption(row, data)


async def get_redemption(engine: RedemptionEngine, redemption_id: uuid.UUID) -> RedemptionPublic:
    row = await engine.get(redemption_id)
    if row is None:
        raise NotFound(f"No redemption has the id {redemption_id}.")
    return redemption_public(row)


def _settle_refusal(row: Mapping[str, Any], action: AuditAction, redemption_id: uuid.UUID) -> None:
    match row["refusal"]:
        case None:
            return
        case "not-found":
            raise NotFound(f"No redemption has the id {redemption_id}.")
        case "hold-expired":
            raise HoldExpired("The hold expired; redeem the code again.")
    state = RedemptionStatus(row["state"])
    if action is AuditAction.rollback:
        raise InvalidRedemptionState(
            "Only a redemption can be rolled back"
            + (
                ": it was rolled back already."
                if state is RedemptionStatus.rolled_back
                else f"; this one is {state.value} (release a hold instead)."
            )
        )
    raise InvalidRedemptionState(f"Only a hold can be settled; this one is {state.value}.")


async def settle(
    session: AsyncSession,
    *,
    redemption_id: uuid.UUID,
    action: AuditAction,
    actor: ApiKey,
    idempotency_key: str | None,
    engine: RedemptionEngine | None = None,
) -> RedemptionPublic:
    """Confirm or release a hold, or roll back a redemption."""
    args = (redemption_id, action.value, actor.id, idempotency_key)
    if engine is not None and idempotency_key is None:
        row = await engine.settle(*args)
    else:
        row = await settle_on(await session_driver(session), *args)
    _settle_refusal(row, action, redemption_id)
    return redemption_public(row)
