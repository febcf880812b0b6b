"""/v1/redemptions: redeem, validate, hold → confirm/release, roll back."""

import uuid

from fastapi import APIRouter, status

from app.auth import ReadKey, RedeemKey
from app.db import Session
from app.errors import (
    AlreadyRedeemed,
    AmbiguousCode,
    Expired,
    HoldExpired,
    InvalidRedemptionState,
    MaxUsesReached,
    NotFound,
    NotYetValid,
    RecipientMismatch,
    SetArchived,
    TooManyRequests,
    UnknownCode,
    Voided,
)
from app.idempotency import IdempotencyKey, IdempotentRoute
from app.models.audit import AuditAction
from app.problems import problem_responses
from app.ratelimit import RedeemRateLimit
from app.schemas.redemption import RedemptionPublic, RedemptionRequest, ValidationResult
from app.services import redemptions
from app.services.redemptions import Engine, RedemptionEngine

router = APIRouter(prefix="/v1/redemptions", tags=["redemptions"], route_class=IdempotentRoute)

_REFUSALS = (
    UnknownCode,
    AmbiguousCode,
    AlreadyRedeemed,
    MaxUsesReached,
    NotYetValid,
    Expired,
    RecipientMismatch,
    Voided,
    SetArchived,
    TooManyRequests,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Redeem a code",
    description="Records a use of the code under the set's limits: a unique code once, a "
    "shared code `max_uses` times in all and `per_recipient_limit` times per recipient. "
    "With `hold_seconds` the use is held for a checkout: it counts until confirmed, "
    "released or expired. Rate-limited per API key.",
    responses=problem_responses(*_REFUSALS),
)
async def redeem_code(
    _: RedeemKey,
    __: RedeemRateLimit,
    body: RedemptionRequest,
    session: Session,
    key: IdempotencyKey,
    engine: Engine,
) -> RedemptionPublic:
    return await redemptions.redeem(session, data=body, actor=_, idempotency_key=key, engine=engine)


@router.post(
    "/validate",
    summary="Check whether a code could be redeemed",
    description="Changes nothing. `valid` says whether a redemption with this body would "
    "succeed now, and `reason` the problem type it would get if not. Rate-limited.",
    responses=problem_responses(TooManyRequests),
)
async def validate_code(
    _: RedeemKey, __: RedeemRateLimit, body: RedemptionRequest, session: Session, engine: Engine
) -> ValidationResult:
    return await redemptions.validate(session, data=body, engine=engine)


@router.get(
    "/{redemption_id:uuid}",
    summary="Get a redemption",
    responses=problem_responses(NotFound),
)
async def get_redemption(_: ReadKey, redemption_id: uuid.UUID, engine: Engine) -> RedemptionPublic:
    return await redemptions.get_redemption(engine, redemption_id)


async def _settle(
    caller: RedeemKey,
    redemption_id: uuid.UUID,
    session: Session,
    key: IdempotencyKey,
    engine: RedemptionEngine,
    action: AuditAction,
) -> RedemptionPublic:
    return await redemptions.settle(
        session,
        redemption_id=redemption_id,
        action=action,
        actor=caller,
        idempotency_key=key,
        engine=engine,
    )


@router.post(
    "/{redemption_id:uuid}/rollback",
    summary="Roll back a redemption",
    description="Gives the use back: a unique code can be redeemed again, a shared code "
    "has one more use. Rolling back twice is refused.",
    responses=problem_responses(NotFound, InvalidRedemptionState),
)
async def rollback_redemption(
    _: RedeemKey,
    redemption_id: uuid.UUID,
    session: Session,
    key: IdempotencyKey,
    engine: Engine,
) -> RedemptionPublic:
    return await _settle(_, redemption_id, session, key, engine, AuditAction.rollback)


@router.post(
    "/{redemption_id:uuid}/confirm",
    summary="Confirm a held redemption",
    responses=problem_responses(NotFound, InvalidRedemptionState, HoldExpired),
)
async def confirm_redemption(
    _: RedeemKey,
    redemption_id: uuid.UUID,
    session: Session,
    key: IdempotencyKey,
    engine: Engine,
) -> RedemptionPublic:
    return await _settle(_, redemption_id, session, key, engine, AuditAction.confirm)


@router.post(
    "/{redemption_id:uuid}/release",
    summary="Release a held redemption",
    description="The held use is given back (a failed payment, a cancelled checkout).",
    responses=problem_responses(NotFound, InvalidRedemptionState),
)
async def release_redemption(
    _: RedeemKey,
    redemption_id: uuid.UUID,
    session: Session,
    key: IdempotencyKey,
    engine: Engine,
) -> RedemptionPublic:
    return await _settle(_, redemption_id, session, key, engine, AuditAction.release)
