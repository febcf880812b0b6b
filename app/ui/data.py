"""The dashboard's figures that come from features not built yet, one function each:
the statistics of issue 16 (set stats, timelines, a recipient's coupons and activity)
and the webhooks of issue 12. Each returns None while its feature does not exist, and
the page then says "not available": no figure is made up. Wiring a feature in means
filling in its function here; the pages and templates already render the result.

Every function takes the request's session and the signed-in key (to check scopes as
the feature's API does)."""

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.api_key import ApiKey
from app.models.coupon_set import CouponSet


@dataclass(frozen=True)
class SetStats:
    """What GET /v1/coupon-sets/{id}/stats (and each set-list item's stats) answers."""

    days_of_stock_left: float | None
    low_stock: bool
    forecast: str | None  # the forecast in words, e.g. "runs out around 12 December"
    assigned_per_day: float | None = None
    # Per pool id: its low-stock threshold (editable with write), when the API has one.
    thresholds: dict[uuid.UUID, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DayCount:
    day: date  # in the time zone asked for
    assigned: int
    redeemed: int


@dataclass(frozen=True)
class HeldCoupon:
    set_key: str
    set_label: str
    code: str | None
    pool: str | None
    status: str
    assigned_at: datetime | None
    redeemed_at: datetime | None


@dataclass(frozen=True)
class ActivityEvent:
    at: datetime
    action: str
    set_key: str | None
    code: str | None


@dataclass(frozen=True)
class Recipient:
    recipient_id: str
    coupons: list[HeldCoupon]
    activity: list[ActivityEvent]


@dataclass(frozen=True)
class Attempt:
    id: str
    at: datetime
    event: str
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    url: str
    events: list[str]
    active: bool
    attempts: list[Attempt]


async def set_stats(session: AsyncSession, key: ApiKey, coupon_set: CouponSet) -> SetStats | None:
    """The set's stats (issue 16: GET /v1/coupon-sets/{id}/stats); None until it exists."""
    return None


async def set_list_stats(
    session: AsyncSession, key: ApiKey, sets: list[CouponSet]
) -> dict[uuid.UUID, SetStats] | None:
    """The stats on each set-list item (issue 16); None until they exist."""
    return None


async def timeline(
    session: AsyncSession, key: ApiKey, coupon_set: CouponSet, *, days: int, tz: str
) -> list[DayCount] | None:
    """Assignments and redemptions per day over the last ``days`` days, days in the
    browser's time zone ``tz`` (issue 16's timeline); None until it exists."""
    return None


async def set_pool_threshold(
    session: AsyncSession, key: ApiKey, coupon_set: CouponSet, pool: str, threshold: int | None
) -> bool:
    """Change a pool's low-stock threshold (issue 16, with the ``write`` scope); False
    until thresholds exist."""
    return False


async def recipient(session: AsyncSession, key: ApiKey, recipient_id: str) -> Recipient | None:
    """Every coupon a recipient holds across sets, and its activity (issue 16:
    GET /v1/recipients/{id}/coupons and /activity); None until they exist."""
    return None


async def webhooks(session: AsyncSession, key: ApiKey) -> list[Webhook] | None:
    """The webhook endpoints with their recent attempts (issue 12); None until they exist."""
    return None


async def retry_webhook(session: AsyncSession, key: ApiKey, attempt: str) -> bool:
    """Send a failed attempt again (issue 12); False until webhooks exist."""
    return False
