"""Statistics as the API shows them: a set's counts, activity and forecast, the set
list's glance, timelines, and a recount's report."""

import enum
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models.coupon_set import SetKind
from app.schemas.pool import StockState


class CodeCounts(BaseModel):
    """Codes of a unique set (or pool). `available`, `assigned`, `redeemed` and `void`
    are disjoint and add up to `total`; `sent` and `held` overlay them."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "total": 10000,
                "available": 6200,
                "assigned": 3100,
                "redeemed": 650,
                "void": 50,
                "sent": 2900,
                "held": 12,
            }
        }
    )

    total: int
    available: int
    assigned: int = Field(description="Given to a recipient and not redeemed")
    redeemed: int
    void: int
    sent: int = Field(
        description="Assigned or redeemed codes of deliveries whose messages were handed to "
        "the sending system (the first complete read of GET /v1/deliveries/{id}/messages); "
        "a reported failure gives its code back, so it leaves this count"
    )
    held: int = Field(description="Codes with a live checkout hold")


class Forecast(BaseModel):
    """When the stock runs out at the recent rate."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "assign_rate_per_day": 412.5,
                "days_of_stock_left": 15.03,
                "exhausted_at": "2026-12-15T09:12:00Z",
                "basis": "ewma_daily_14d_half_life_3d",
            }
        }
    )

    assign_rate_per_day: float = Field(
        description="Assignments per day (uses per day for a shared set), the daily counts "
        "of the last 14 days weighted by age (half-life 3 days)"
    )
    days_of_stock_left: float | None = Field(
        description="Available codes (a shared set's remaining uses) ÷ the rate; null when "
        "nothing is being used up or the stock is unlimited"
    )
    exhausted_at: datetime | None
    basis: str = Field(description="The method, see docs/architecture.md (Statistics)")


class PoolStats(BaseModel):
    id: uuid.UUID
    name: str
    codes: CodeCounts
    forecast: Forecast
    stock_state: StockState = Field(
        description="The pool's last stock alert: ok (none, or pool.restocked), low "
        "(pool.low_stock), exhausted (pool.exhausted)"
    )
    stock_state_at: datetime | None = Field(description="When stock_state last changed")
    low_stock_threshold: int | None = Field(
        description="pool.low_stock fires when the free codes drop to this many"
    )
    low_stock_days: float | None = Field(
        description="pool.low_stock fires when the days of stock left drop to this many"
    )


class SharedCounts(BaseModel):
    """A shared set: its one code's uses."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"uses": 1520, "remaining_uses": 8480, "recipients": 3000, "held": 4}
        }
    )

    uses: int = Field(description="Uses that count: redeemed, and holds that have not expired")
    remaining_uses: int | None = Field(description="null without max_uses")
    recipients: int = Field(description="Recipients the code was assigned to")
    held: int = Field(description="Live holds")


class Activity(BaseModel):
    """Events of the recent past, counted in 15-minute buckets: "last 24 h" is the
    buckets that started at most 24 hours ago."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "assigned_last_24h": 420,
                "redeemed_last_24h": 61,
                "assigned_last_7d": 2950,
                "redeemed_last_7d": 530,
                "redemption_rate": 0.1734,
            }
        }
    )

    assigned_last_24h: int
    redeemed_last_24h: int
    assigned_last_7d: int
    redeemed_last_7d: int
    redemption_rate: float | None = Field(
        description="redeemed ÷ (assigned + redeemed) of the codes now (a shared set: uses "
        "÷ (recipients + uses)); null when nothing was assigned"
    )


class SetStats(BaseModel):
    set_id: uuid.UUID
    set_key: str
    kind: SetKind
    as_of: datetime = Field(description="The moment the counts are exact for")
    codes: CodeCounts | None = Field(description="Unique sets; null for a shared set")
    shared: SharedCounts | None = Field(description="Shared sets; null for a unique set")
    pools: list[PoolStats] = Field(description="One per pool of a unique set")
    activity: Activity
    forecast: Forecast


class SetGlance(BaseModel):
    """The set list's glance. A shared set: `total` its max_uses, `available` its
    remaining uses (both null without max_uses), `assigned` its recipients, `redeemed`
    its uses that count, `sent` null."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "total": 10000,
                "available": 6200,
                "assigned": 3100,
                "sent": 2900,
                "redeemed": 650,
            }
        }
    )

    total: int | None
    available: int | None
    assigned: int
    sent: int | None
    redeemed: int


class TimelineMetric(enum.StrEnum):
    assigned = "assigned"
    redeemed = "redeemed"
    rolled_back = "rolled_back"
    imported = "imported"


class TimelineBucket(enum.StrEnum):
    hour = "hour"
    day = "day"
    week = "week"


class TimelinePoint(BaseModel):
    start: datetime = Field(description="The bucket's start, with the zone's offset")
    count: int


class Timeline(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "metric": "assigned",
                "bucket": "day",
                "tz": "Asia/Kolkata",
                "points": [
                    {"start": "2026-11-28T00:00:00+05:30", "count": 380},
                    {"start": "2026-11-29T00:00:00+05:30", "count": 0},
                    {"start": "2026-11-30T00:00:00+05:30", "count": 412},
                ],
            }
        }
    )

    metric: TimelineMetric
    bucket: TimelineBucket
    tz: str
    points: list[TimelinePoint]


class Drift(BaseModel):
    """A pool whose counters differed from a count of its rows (now repaired):
    the difference per status, truth minus counters."""

    set_key: str
    pool: str = Field(description="The pool's name; empty for a shared set's recipients")
    available: int
    assigned: int
    redeemed: int
    void: int


class RecountReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "drift": [
                    {
                        "set_key": "spring",
                        "pool": "default",
                        "available": -3,
                        "assigned": 3,
                        "redeemed": 0,
                        "void": 0,
                    }
                ],
                "delivered_drift": 0,
                "repaired": 6,
            }
        }
    )

    drift: list[Drift] = Field(description="Empty when every counter was exact")
    delivered_drift: int = Field(description="Codes per delivery id that were miscounted")
    repaired: int = Field(description="Codes miscounted in all (absolute differences)")
