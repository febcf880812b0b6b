"""Redemptions: uses of a code, with holds for checkouts and rollbacks."""

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import BigInteger, ForeignKey, Index, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.code import CodeText
from app.models.common import WriteModel


class RedemptionStatus(enum.StrEnum):
    redeemed = "redeemed"
    held = "held"
    released = "released"
    expired = "expired"
    rolled_back = "rolled_back"


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        # The uses that count against limits: redeemed, or held (until the hold expires).
        Index(
            "ix_redemptions_active_set",
            "set_id",
            "recipient_id",
            postgresql_where=text("status IN ('redeemed', 'held')"),
        ),
        Index(
            "ix_redemptions_active_code",
            "code_id",
            postgresql_where=text("status IN ('redeemed', 'held')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupon_sets.id", ondelete="CASCADE"))
    code_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("codes.id", ondelete="CASCADE")
    )
    code: Mapped[str]
    status: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[str | None]
    order_id: Mapped[str | None]
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    redeemed_at: Mapped[datetime]
    hold_expires_at: Mapped[datetime | None]
    settled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


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
    redeemed_at: AwareDatetime | None = Field(
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
