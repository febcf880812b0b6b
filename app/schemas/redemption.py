"""Redemptions: the body of a use, a redemption as the API shows it, and a validation."""

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from app.models.redemption import RedemptionStatus
from app.schemas.code import CodeText
from app.schemas.common import Instant, WriteModel


class RedemptionRequest(WriteModel):
    code: CodeText
    set: str | None = Field(
        default=None,
        max_length=64,
        description="The set's id or key; needed only when several sets hold the code",
    )
    recipient_id: str | None = Field(default=None, min_length=1, max_length=200)
    order_id: str | None = Field(default=None, max_length=200)
    amount: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
    redeemed_at: Instant | None = Field(
        default=None, description="When the use happened; now if absent"
    )
    hold_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86_400,
        description="Hold the use for a checkout: it counts against the limits until "
        "confirmed, released, or expired after this many seconds",
    )


class RedemptionPublic(BaseModel):
    id: uuid.UUID
    code: str
    set_id: uuid.UUID
    set_key: str
    status: RedemptionStatus
    recipient_id: str | None
    order_id: str | None
    amount: Decimal | None
    redeemed_at: datetime
    hold_expires_at: datetime | None
    settled_at: datetime | None = Field(
        description="When it was confirmed, released or rolled back"
    )


class ValidationResult(BaseModel):
    valid: bool
    reason: str | None = Field(
        description="Why not: the problem type slug a redemption would get (e.g. `expired`)"
    )
    detail: str | None
    code: str
    set_id: uuid.UUID | None
    set_key: str | None
    remaining_uses: int | None = Field(description="Shared sets with max_uses: uses left")
