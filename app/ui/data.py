"""The dashboard's figures from the statistics (set stats, timelines, a recipient's
coupons and activity) and the webhooks, one function each, in the shapes the pages
render. A function whose feature does not exist returns None, and the page then says
"not available": no figure is made up.

Every function takes the request's session and the signed-in key (to check scopes as
the feature's API does)."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models.api_key import ApiKey
from app.models.coupon_set import CouponSet, SetKind
from app.pagination import PageParams
from app.schemas.pool import PoolUpdate
from app.schemas.stats import Forecast, SetGlance, TimelineBucket, TimelineMetric
from app.services import pools, recipients
from app.services.events import endpoints
from app.services.stats import service as stats_service

# A set or pool is marked low when its stock lasts less than this at the recent rate
# (or is gone), until pools carry thresholds of their own.
LOW_STOCK_DAYS = 7.0
RECIPIENT_ROWS = 200  # coupons and events shown on a contact's page
WEBHOOK_ROWS = 50  # endpoints on the webhooks page
ATTEMPT_ROWS = 10  # latest attempts shown per endpoint


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


def _in_words(forecast: Forecast) -> str | None:
    if forecast.exhausted_at is None:
        return None
    rate = f"{forecast.assign_rate_per_day:,.1f}"
    return f"runs out around {forecast.exhausted_at:%d %B %Y} at {rate} a day"


def _low(forecast: Forecast, available: int | None) -> bool:
    days = forecast.days_of_stock_left
    return available == 0 or (days is not None and days < LOW_STOCK_DAYS)


def _set_stats(found: Forecast, available: int | None) -> SetStats:
    return SetStats(
        days_of_stock_left=found.days_of_stock_left,
        low_stock=_low(found, available),
        forecast=_in_words(found),
        assigned_per_day=found.assign_rate_per_day,
    )


async def set_stats(session: AsyncSession, key: ApiKey, coupon_set: CouponSet) -> SetStats | None:
    """The set's stats (GET /v1/coupon-sets/{id}/stats)."""
    found = await stats_service.set_stats(session, coupon_set=coupon_set)
    available = found.codes.available if found.codes is not None else None
    if found.shared is not None:
        available = found.shared.remaining_uses
    return _set_stats(found.forecast, available)


async def glances(session: AsyncSession, sets: list[CouponSet]) -> dict[uuid.UUID, SetGlance]:
    """The set list's counts of a page's sets (GET /v1/coupon-sets), read once for the
    page's stock bars and its stats."""
    return await stats_service.glances(session, sets)


async def set_list_stats(
    session: AsyncSession,
    key: ApiKey,
    sets: list[CouponSet],
    glanced: dict[uuid.UUID, SetGlance],
) -> dict[uuid.UUID, SetStats] | None:
    """Days of stock left and the low-stock mark of each set-list item: what
    ``set_stats`` gives each, for the whole page in one more statement."""
    found = await stats_service.forecasts(session, sets, glanced)
    return {s.id: _set_stats(found[s.id], glanced[s.id].available) for s in sets}


def set_list_stock(
    sets: list[CouponSet], glanced: dict[uuid.UUID, SetGlance]
) -> dict[uuid.UUID, dict[str, int]]:
    """The stock bar of each unique set of a set-list page, from the set list's counts."""
    return {
        s.id: {
            "available": glanced[s.id].available or 0,
            "assigned": glanced[s.id].assigned or 0,
            "redeemed": glanced[s.id].redeemed or 0,
            "total": glanced[s.id].total or 0,
        }
        for s in sets
        if s.kind == SetKind.unique
    }


async def timeline(
    session: AsyncSession, key: ApiKey, coupon_set: CouponSet, *, days: int, tz: str
) -> list[DayCount] | None:
    """Assignments and redemptions per day over the last ``days`` days, days in the
    browser's time zone ``tz`` (the timeline API; UTC for a zone it does not know)."""
    if tz not in stats_service.zones():  # read once per process, not per page
        tz = "UTC"
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    series = {}
    for metric in (TimelineMetric.assigned, TimelineMetric.redeemed):
        found = await stats_service.timeline(
            session,
            coupon_set=coupon_set,
            metric=metric,
            bucket=TimelineBucket.day,
            start=start,
            end=end,
            tz=tz,
            pool=None,
        )
        series[metric] = {p.start.date(): p.count for p in found.points}
    days_seen = sorted(set(series[TimelineMetric.assigned]) | set(series[TimelineMetric.redeemed]))
    return [
        DayCount(
            day=day,
            assigned=series[TimelineMetric.assigned].get(day, 0),
            redeemed=series[TimelineMetric.redeemed].get(day, 0),
        )
        for day in days_seen[-days:]
    ]


async def set_pool_threshold(
    session: AsyncSession, key: ApiKey, coupon_set: CouponSet, pool: str, threshold: int | None
) -> bool:
    """Change a pool's low-stock threshold (PATCH .../pools/{pool}, ``write``)."""
    found = await pools.get_pool(session, coupon_set=coupon_set, ref=pool)
    await pools.update_pool(
        session, pool=found, data=PoolUpdate.model_validate({"low_stock_threshold": threshold})
    )
    return True


async def recipient(session: AsyncSession, key: ApiKey, recipient_id: str) -> Recipient | None:
    """Every coupon a recipient holds across sets (the first RECIPIENT_ROWS), and its
    latest activity (GET /v1/recipients/{id}/coupons and /activity)."""
    params = PageParams(limit=RECIPIENT_ROWS, cursor=None)
    coupons = await recipients.list_coupons(session, recipient_id=recipient_id, params=params)
    activity = await recipients.list_activity(session, recipient_id=recipient_id, params=params)
    return Recipient(
        recipient_id=recipient_id,
        coupons=[
            HeldCoupon(
                set_key=c.set_key,
                set_label=c.set_label,
                code=c.code,
                pool=c.pool,
                status=str(c.status),
                assigned_at=c.assigned_at,
                redeemed_at=c.redeemed_at,
            )
            for c in coupons.items
        ],
        activity=[
            ActivityEvent(at=e.at, action=str(e.action), set_key=e.set_key, code=e.code)
            for e in activity.items
        ],
    )


async def webhooks(session: AsyncSession, key: ApiKey) -> list[Webhook] | None:
    """The webhook endpoints (the first WEBHOOK_ROWS) with their latest attempts."""
    params = PageParams(limit=WEBHOOK_ROWS, cursor=None)
    found = []
    for endpoint in (await endpoints.list_endpoints(session, params=params))[:WEBHOOK_ROWS]:
        attempts = await endpoints.list_attempts(
            session,
            endpoint_id=endpoint.id,
            status=None,
            event_type=None,
            event_id=None,
            params=PageParams(limit=ATTEMPT_ROWS, cursor=None),
        )
        found.append(
            Webhook(
                id=endpoint.id,
                url=endpoint.url,
                events=list(endpoint.events),
                active=endpoint.enabled,
                attempts=[
                    Attempt(
                        id=f"{endpoint.id}:{a.id}",
                        at=a.last_attempt_at or a.created_at,
                        event=a.event_type,
                        status_code=a.response_status,
                        error=a.error,
                    )
                    for a in attempts[:ATTEMPT_ROWS]
                ],
            )
        )
    return found


async def retry_webhook(session: AsyncSession, key: ApiKey, attempt: str) -> bool:
    """Send an attempt again (POST .../attempts/{id}/retry); ``attempt`` is
    "endpoint id:attempt id" as ``webhooks`` names it."""
    endpoint_id, _, attempt_id = attempt.partition(":")
    try:
        ids = uuid.UUID(endpoint_id), int(attempt_id)
    except ValueError:
        raise NotFound(f"No webhook attempt is called '{attempt}'.") from None
    await endpoints.retry(session, endpoint_id=ids[0], attempt_id=ids[1])
    return True
