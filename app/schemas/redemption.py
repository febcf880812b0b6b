"""Redemptions: the body of a use, a redemption as the API shows it, and a validation."""

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from app.models.redemption import RedemptionStatus
from app.schemas.code import CodeText
from app.schemas.common import Instant, WriteModel

# An amount as text: plain digits with up to 2 decimals (no exponent, no sign, no blanks).
AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,2})?$"
_MAX_AMOUNT = Decimal("999999999999.99")


def _plain_amount(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(AMOUNT_PATTERN, value):
        raise ValueError("must be digits with up to 2 decimals, e.g. '49.90'")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_plain_amount),
    Field(ge=0, le=_MAX_AMOUNT, max_digits=14, decimal_places=2),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 999999999999.99, "multipleOf": 0.01},
                {"type": "string", "pattern": AMOUNT_PATTERN},
            ],
            "description": "The order's amount, at most 2 decimals, as a number or a string",
            "examples": ["49.90"],
        }
    ),
]


class RedemptionRequest(WriteModel):
    code: CodeText
    set: str | None = Field(
        default=None,
        max_length=64,
        description="The set's id or key; needed only when several sets hold the code",
    )
    recipient_id: str | None = Field(default=None, min_length=1, max_length=200)
    order_id: str | None = Field(default=None, max_length=200)
    amount: Amount | None = None
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
