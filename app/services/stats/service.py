"""The reads: a set's statistics, the set list's glance, a pool's stock, timelines.

Each runs in the request's session, on the asyncpg connection under it
(``db.session_driver``), with the statements of ``sql.py``: every count is the folded
counters plus the deltas not folded yet, in one statement, so it is exact as of that
statement whatever the folder is doing. None reads the codes themselves."""

import functools
import math
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_driver
from app.errors import InvalidTimeline
from app.models.coupon_set import CouponSet, SetKind
from app.models.pool import Pool
from app.schemas.pool import StockState
from app.schemas.stats import (
    Activity,
    CodeCounts,
    Forecast,
    PoolStats,
    SetGlance,
    SetStats,
    SharedCounts,
    Timeline,
    TimelineBucket,
    TimelineMetric,
    TimelinePoint,
)
from app.services.stats import sql

# The forecast: daily counts of the last FORECAST_DAYS days (fewer for a younger pool),
# each weighted by HALF_LIFE_DAYS: yesterday counts 0.79 of today, three days ago half.
FORECAST_DAYS = 14
HALF_LIFE_DAYS = 3.0
BASIS = "ewma_daily_14d_half_life_3d"
MAX_POINTS = 1000
_SPAN = {
    TimelineBucket.hour: timedelta(hours=1),
    TimelineBucket.day: timedelta(days=1),
    TimelineBucket.week: timedelta(weeks=1),
}
# A timeline without `from` covers this many buckets up to `to`.
DEFAULT_POINTS = {TimelineBucket.hour: 48, TimelineBucket.day: 30, TimelineBucket.week: 26}


@dataclass(frozen=True)
class PoolCounts:
    pool_id: uuid.UUID
    name: str
    created_at: datetime
    stock_state: StockState
    stock_state_at: datetime | None
    low_stock_threshold: int | None
    low_stock_days: float | None
    available: int
    assigned: int
    redeemed: int
    void: int
    sent: int
    held: int

    @property
    def total(self) -> int:
        return self.available + self.assigned + self.redeemed + self.void


async def pool_counts(
    session: AsyncSession, *, set_id: uuid.UUID, pool_id: uuid.UUID | None = None
) -> list[PoolCounts]:
    """Codes per pool and status (and sent, held): every pool of the set, or one."""
    connection = await session_driver(session)
    rows = await connection.fetch(sql.POOL_COUNTS, set_id, pool_id)
    return [PoolCounts(**dict(row)) for row in rows]


def _counts(rows: Sequence[PoolCounts]) -> CodeCounts:
    fields = ("available", "assigned", "redeemed", "void", "sent", "held")
    sums = {f: sum(getattr(r, f) for r in rows) for f in fields}
    return CodeCounts(total=sum(r.total for r in rows), **sums)


def _weights(created_at: datetime, now: datetime) -> list[float]:
    days = max(1, min(FORECAST_DAYS, math.ceil((now - created_at) / timedelta(days=1))))
    return [0.5 ** (age / HALF_LIFE_DAYS) for age in range(days)]


def forecast(daily: dict[int, int], stock: int | None, *, created_at: datetime) -> Forecast:
    """The weighted daily rate of ``daily`` ({age in days: events}) and when ``stock``
    (None: unlimited) runs out at it."""
    now = datetime.now(UTC)
    weights = _weights(created_at, now)
    rate = sum(w * daily.get(age, 0) for age, w in enumerate(weights)) / sum(weights)
    if rate <= 0 or stock is None:
        return Forecast(
            assign_rate_per_day=round(rate, 3),
            days_of_stock_left=None,
            exhausted_at=None,
            basis=BASIS,
        )
    days = stock / rate
    return Forecast(
        assign_rate_per_day=round(rate, 3),
        days_of_stock_left=round(days, 3),
        exhausted_at=now + timedelta(days=days),
        basis=BASIS,
    )


@dataclass
class _Recent:
    assigned_24h: int = 0
    redeemed_24h: int = 0
    assigned_7d: int = 0
    redeemed_7d: int = 0


async def recent_activity(
    connection: asyncpg.Connection, set_id: uuid.UUID, *, shared: bool
) -> tuple[_Recent, dict[uuid.UUID, dict[int, int]]]:
    """The set's activity windows, and per pool the daily counts the forecast weighs
    (assignments; a shared set's uses)."""
    since = datetime.now(UTC) - timedelta(days=FORECAST_DAYS)
    recent = _Recent()
    daily: dict[uuid.UUID, dict[int, int]] = {}
    for row in await connection.fetch(sql.RECENT_ACTIVITY, set_id, since):
        assigned, redeemed, age = int(row["assigned"]), int(row["redeemed"]), row["age_days"]
        if row["last_24h"]:
            recent.assigned_24h += assigned
            recent.redeemed_24h += redeemed
        if age < 7:
            recent.assigned_7d += assigned
            recent.redeemed_7d += redeemed
        days = daily.setdefault(row["pool_id"], {})
        days[age] = days.get(age, 0) + (redeemed if shared else assigned)
    return recent, daily


def _shared_uses(row: asyncpg.Record) -> int:
    """A shared set's uses that count now: its counter (redeemed and held) less the
    holds that expired and are not given back yet, as a validation reads them."""
    return int(row["counted"]) - (int(row["holds"]) - int(row["held"]))


def _rate(redeemed: int, assigned: int) -> float | None:
    return None if assigned + redeemed == 0 else round(redeemed / (assigned + redeemed), 4)


def _activity(recent: _Recent, redemption_rate: float | None) -> Activity:
    return Activity(
        assigned_last_24h=recent.assigned_24h,
        redeemed_last_24h=recent.redeemed_24h,
        assigned_last_7d=recent.assigned_7d,
        redeemed_last_7d=recent.redeemed_7d,
        redemption_rate=redemption_rate,
    )


async def set_stats(session: AsyncSession, *, coupon_set: CouponSet) -> SetStats:
    connection = await session_driver(session)
    as_of = await connection.fetchval("SELECT now()")
    shared_set = coupon_set.kind == SetKind.shared
    recent, daily = await recent_activity(connection, coupon_set.id, shared=shared_set)
    everything: dict[int, int] = {}
    for days in daily.values():
        for age, n in days.items():
            everything[age] = everything.get(age, 0) + n
    if shared_set:
        row = await connection.fetchrow(sql.SHARED_COUNTS, coupon_set.id)
        uses = _shared_uses(row)
        remaining = None if coupon_set.max_uses is None else max(0, coupon_set.max_uses - uses)
        shared = SharedCounts(
            uses=uses, remaining_uses=remaining, recipients=row["recipients"], held=row["held"]
        )
        return SetStats(
            set_id=coupon_set.id,
            set_key=coupon_set.key,
            kind=SetKind(coupon_set.kind),
            as_of=as_of,
            codes=None,
            shared=shared,
            pools=[],
            activity=_activity(recent, _rate(uses, shared.recipients)),
            forecast=forecast(everything, remaining, created_at=coupon_set.created_at),
        )
    rows = await pool_counts(session, set_id=coupon_set.id)
    codes = _counts(rows)
    pools = [
        PoolStats(
            id=r.pool_id,
            name=r.name,
            codes=_counts([r]),
            forecast=forecast(daily.get(r.pool_id, {}), r.available, created_at=r.created_at),
            stock_state=r.stock_state,
            stock_state_at=r.stock_state_at,
            low_stock_threshold=r.low_stock_threshold,
            low_stock_days=r.low_stock_days,
        )
        for r in rows
    ]
    return SetStats(
        set_id=coupon_set.id,
        set_key=coupon_set.key,
        kind=SetKind(coupon_set.kind),
        as_of=as_of,
        codes=codes,
        shared=None,
        pools=pools,
        activity=_activity(recent, _rate(codes.redeemed, codes.assigned)),
        forecast=forecast(everything, codes.available, created_at=coupon_set.created_at),
    )


async def glances(session: AsyncSession, sets: Sequence[CouponSet]) -> dict[uuid.UUID, SetGlance]:
    """The set list's counts for the sets of one page, in one statement."""
    if not sets:
        return {}
    connection = await session_driver(session)
    rows = {r["set_id"]: r for r in await connection.fetch(sql.GLANCES, [s.id for s in sets])}
    found: dict[uuid.UUID, SetGlance] = {}
    for coupon_set in sets:
        row = rows[coupon_set.id]
        if coupon_set.kind == SetKind.shared:
            uses = _shared_uses(row)
            limit = coupon_set.max_uses
            found[coupon_set.id] = SetGlance(
                total=limit,
                available=None if limit is None else max(0, limit - uses),
                assigned=row["assigned"],
                sent=None,
                redeemed=uses,
            )
        else:
            found[coupon_set.id] = SetGlance(
                total=row["available"] + row["assigned"] + row["redeemed"] + row["void"],
                available=row["available"],
                assigned=row["assigned"],
                sent=row["sent"],
                redeemed=row["redeemed"],
            )
    return found


async def forecasts(
    session: AsyncSession, sets: Sequence[CouponSet], glanced: dict[uuid.UUID, SetGlance]
) -> dict[uuid.UUID, Forecast]:
    """Each set's forecast as ``set_stats`` gives it, for the sets of one page in one
    statement: ``glanced`` (``glances`` of the same sets) holds their stock."""
    if not sets:
        return {}
    connection = await session_driver(session)
    since = datetime.now(UTC) - timedelta(days=FORECAST_DAYS)
    daily: dict[uuid.UUID, dict[int, int]] = {}
    shared = {s.id for s in sets if s.kind == SetKind.shared}
    for row in await connection.fetch(sql.DAILY_OF_SETS, [s.id for s in sets], since):
        days = daily.setdefault(row["set_id"], {})
        used = row["redeemed"] if row["set_id"] in shared else row["assigned"]
        days[row["age_days"]] = days.get(row["age_days"], 0) + int(used)
    return {
        s.id: forecast(daily.get(s.id, {}), glanced[s.id].available, created_at=s.created_at)
        for s in sets
    }


@functools.cache
def zones() -> frozenset[str]:
    """The IANA zone names (not the system's `localtime` and other files beside them)."""
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules", "Factory"}


def _zone(tz: str) -> str:
    if tz not in zones():
        raise InvalidTimeline(
            f"'{tz}' is not an IANA time zone (such as 'Europe/Madrid' or 'Asia/Kolkata')."
        )
    return tz


async def timeline(
    session: AsyncSession,
    *,
    coupon_set: CouponSet,
    metric: TimelineMetric,
    bucket: TimelineBucket,
    start: datetime | None,
    end: datetime | None,
    tz: str,
    pool: Pool | None,
) -> Timeline:
    zone = _zone(tz)
    end = end or datetime.now(UTC)
    try:
        start = start or end - _SPAN[bucket] * DEFAULT_POINTS[bucket]
    except OverflowError:
        raise InvalidTimeline("`to` is too early to count back from; give `from`.") from None
    if start > end:
        raise InvalidTimeline("`from` is after `to`.")
    # At most one bucket more than the span holds (plus a clock change): a cheap guard
    # before PostgreSQL cuts the buckets, and counts them exactly.
    if (end - start) / _SPAN[bucket] > MAX_POINTS + 1:
        raise InvalidTimeline(_too_many(bucket))
    connection = await session_driver(session)
    try:
        rows = await connection.fetch(
            sql.TIMELINE,
            coupon_set.id,
            start,
            end,
            zone,
            metric.value,
            pool.id if pool else None,
            MAX_POINTS + 1,
            bucket.value,
        )
    except asyncpg.InvalidParameterValueError:  # a zone Python knows and PostgreSQL not
        raise InvalidTimeline(f"'{tz}' is not a time zone the database knows.") from None
    except asyncpg.DatetimeFieldOverflowError:  # near the ends of PostgreSQL's calendar
        raise InvalidTimeline("The range reaches past the dates the database can count.") from None
    if len(rows) > MAX_POINTS:
        raise InvalidTimeline(_too_many(bucket))
    info = zoneinfo.ZoneInfo(zone)
    points = [TimelinePoint(start=r["start"].astimezone(info), count=r["count"]) for r in rows]
    return Timeline(metric=metric, bucket=bucket, tz=zone, points=points)


def _too_many(bucket: TimelineBucket) -> str:
    return (
        f"The range holds more than {MAX_POINTS} {bucket.value} buckets; "
        "shorten it or take longer buckets."
    )
