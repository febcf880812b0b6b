"""Redemptions: uses of a code, with holds for checkouts and rollbacks."""

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field

from app.models.base import Base, Col, insert_time


class RedemptionStatus(enum.StrEnum):
    redeemed = "redeemed"
    held = "held"
    released = "released"
    expired = "expired"
    rolled_back = "rolled_back"


class Redemption(Base, table=True):
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
        # A recipient's holds, for the holds that expired in their activity (an expiry
        # writes no row: it is read from hold_expires_at, which never changes).
        Index(
            "ix_redemptions_recipient_holds",
            "recipient_id",
            "hold_expires_at",
            "id",
            postgresql_where=text("hold_expires_at IS NOT NULL AND recipient_id IS NOT NULL"),
        ),
    )

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    set_id: Col[uuid.UUID] = Field(foreign_key="coupon_sets.id", ondelete="CASCADE")
    code_id: Col[int | None] = Field(
        default=None, foreign_key="codes.id", ondelete="CASCADE", sa_type=BigInteger
    )
    code: Col[str]
    status: Col[str] = Field(max_length=16)
    recipient_id: Col[str | None] = Field(default=None)
    order_id: Col[str | None] = Field(default=None)
    amount: Col[Decimal | None] = Field(default=None, max_digits=14, decimal_places=2)
    redeemed_at: Col[datetime]
    hold_expires_at: Col[datetime | None] = Field(default=None)
    settled_at: Col[datetime | None] = Field(default=None)
    created_at: Col[datetime] = insert_time()
