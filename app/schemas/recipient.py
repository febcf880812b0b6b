"""One recipient across sets: the coupons they hold and what happened to them."""

import enum
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models.code import Channel, CodeStatus
from app.models.coupon_set import SetKind
from app.schemas.page import Page


class RecipientCoupon(BaseModel):
    """A code of a unique set, or an assignment of a shared set's code."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "set_id": "3f1c2b9e-8a55-4c1e-9d0b-2a6f0c7e5d11",
                    "set_key": "spring-2026",
                    "set_label": "Spring sale ☀️",
                    "kind": "unique",
                    "pool": "soccer",
                    "code": "SPRING-AB12",
                    "status": "redeemed",
                    "assigned_at": "2026-03-01T09:30:00Z",
                    "channel": "email",
                    "address": "ann@example.com",
                    "delivery_id": "7d9e4c1a-0b2f-4e8d-a6c3-5f1b2d3e4a5b",
                    "redeemed_at": "2026-03-04T18:12:45Z",
                    "valid_until": "2026-06-30T23:59:59Z",
                }
            ]
        }
    )

    set_id: uuid.UUID
    set_key: str = Field(examples=["spring-2026"])
    set_label: str = Field(examples=["Spring sale ☀️"])
    kind: SetKind
    pool: str | None = Field(description="null for shared sets", examples=["default"])
    code: str = Field(examples=["SPRING-AB12"])
    status: CodeStatus = Field(
        description="The code's status; for a shared code `redeemed` once this recipient "
        "has a redemption of it that counts, else `assigned`"
    )
    assigned_at: datetime
    channel: Channel | None
    address: str | None = Field(examples=["ann@example.com"])
    delivery_id: str | None
    redeemed_at: datetime | None = Field(
        description="For a shared code, this recipient's latest redemption of it"
    )
    valid_until: datetime | None = Field(description="The set's end of validity")


class RecipientCouponPage(Page[RecipientCoupon]):
    pass


class ActivityAction(enum.StrEnum):
    assigned = "assigned"
    redeemed = "redeemed"
    held = "held"
    hold_confirmed = "hold_confirmed"
    hold_released = "hold_released"
    hold_expired = "hold_expired"
    rolled_back = "rolled_back"
    returned = "returned"
    voided = "voided"


class ActivityEvent(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": "2026-03-04T18:12:45Z",
                    "action": "hold_confirmed",
                    "set_id": "3f1c2b9e-8a55-4c1e-9d0b-2a6f0c7e5d11",
                    "set_key": "spring-2026",
                    "code": "SPRING-AB12",
                    "pool": "soccer",
                    "delivery_id": None,
                    "order_id": "o-1001",
                    "redemption_id": "b0c4e6a2-91d3-4f57-8e2a-6c1d0f9b3a77",
                }
            ]
        }
    )

    at: datetime = Field(description="When it happened (a hold's expiry: its end)")
    action: ActivityAction
    set_id: uuid.UUID
    set_key: str | None = Field(description="null once the set is deleted")
    code: str | None = Field(examples=["SPRING-AB12"])
    pool: str | None = Field(description="null for shared sets", examples=["default"])
    delivery_id: str | None = Field(
        description="The delivery that gave or took back the code (assigned, returned)"
    )
    order_id: str | None = Field(
        description="The checkout's order (redemptions, holds and what settled them)",
        examples=["o-1001"],
    )
    redemption_id: uuid.UUID | None = Field(description="The redemption or hold the event is about")


class ActivityPage(Page[ActivityEvent]):
    pass
