"""Statistics: a set's counts, activity and forecast, its timelines, and the recount."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.auth import AdminKey, ReadKey
from app.db import Session
from app.errors import InvalidTimeline, NotFound, PoolsNotSupported
from app.models.pool import Pool
from app.problems import problem_responses
from app.routers.coupon_sets import CouponSetRef
from app.schemas.common import Instant
from app.schemas.stats import RecountReport, SetStats, Timeline, TimelineBucket, TimelineMetric
from app.services import coupon_sets, pools
from app.services.stats import StatsFolder
from app.services.stats import service as stats

router = APIRouter(tags=["statistics"])


@router.get(
    "/v1/coupon-sets/{set_id}/stats",
    summary="A set's statistics: counts, pools, activity and forecast",
    description="Exact as of `as_of`: the database keeps the counts with every change of "
    "a code, and they are read without counting codes, as fast for ten million codes as "
    "for ten. A unique set has `codes` and `pools`, a shared set `shared`.",
    responses=problem_responses(NotFound),
)
async def get_set_stats(_: ReadKey, coupon_set: CouponSetRef, session: Session) -> SetStats:
    return await stats.set_stats(session, coupon_set=coupon_set)


async def _timeline_pool(
    coupon_set: CouponSetRef,
    session: Session,
    pool: Annotated[
        str | None, Query(min_length=1, max_length=200, description="A pool's id or name")
    ] = None,
) -> Pool | None:
    if pool is None:
        return None
    return await pools.get_pool(session, coupon_set=coupon_set, ref=pool)


@router.get(
    "/v1/coupon-sets/{set_id}/stats/timeline",
    summary="Events per hour, day or week, in a time zone",
    description="Counts of one event (`assigned`, `redeemed`, `rolled_back`, `imported`) "
    "per bucket, zero-filled, from the bucket that holds `from` to the last one that "
    "starts before `to` (default: now; `from` defaults to 48 hours, 30 days or 26 weeks "
    "before). Buckets are cut in the IANA time zone `tz` (default UTC): local hours, "
    "calendar days (23 or 25 hours on a clock change) and ISO weeks (from Monday). At "
    "most 1,000 points: a longer range is a `422 invalid-timeline`.",
    responses=problem_responses(NotFound, PoolsNotSupported, InvalidTimeline),
)
async def get_set_timeline(
    _: ReadKey,
    coupon_set: CouponSetRef,
    session: Session,
    pool: Annotated[Pool | None, Depends(_timeline_pool)],
    metric: TimelineMetric = TimelineMetric.assigned,
    bucket: TimelineBucket = TimelineBucket.day,
    start: Annotated[Instant | None, Query(alias="from")] = None,
    end: Annotated[Instant | None, Query(alias="to")] = None,
    tz: Annotated[str, Query(min_length=1, max_length=64, examples=["Asia/Kolkata"])] = "UTC",
) -> Timeline:
    return await stats.timeline(
        session,
        coupon_set=coupon_set,
        metric=metric,
        bucket=bucket,
        start=start,
        end=end,
        tz=tz,
        pool=pool,
    )


async def _folder(request: Request) -> StatsFolder:
    folder: StatsFolder = request.app.state.stats_folder
    return folder


@router.post(
    "/v1/stats/recount",
    summary="Recount the statistics from the rows and repair any drift",
    description="Compares the counters of one set (`set`: its id or key) or of all sets "
    "with a count of the rows, repairs what differs and reports it; also run every "
    "`COUPONS_STATS_RECOUNT_SECONDS`. Reads every code of the sets: minutes for "
    "hundreds of millions of codes. Needs an admin key.",
    responses=problem_responses(NotFound),
)
async def recount_stats(
    _: AdminKey,
    session: Session,
    folder: Annotated[StatsFolder, Depends(_folder)],
    set_ref: Annotated[
        str | None,
        Query(alias="set", min_length=1, max_length=64, description="A set's id or key"),
    ] = None,
) -> RecountReport:
    coupon_set = await coupon_sets.get_coupon_set(session, set_ref) if set_ref else None
    return await folder.recount(coupon_set.id if coupon_set else None)
