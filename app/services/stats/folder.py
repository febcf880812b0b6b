"""The folder and the recount: the statistics' background work, on the plain pool.

Every writer of codes, shared assignments and redemptions appends its statement's change
to ``stats_deltas`` (the triggers of ``app/sql/stats_*.sql``). The folder, a task every
process runs, moves those rows into the counters (``pool_stock``, ``delivery_stock``,
``activity_buckets``) about once a second, in one transaction per batch, so the reads
stay small. It takes the fold lock with a try: of several processes and instances one
folds at a time, the others skip that round. Reads are exact whether or not a fold has
run (docs/architecture.md, "Statistics"); the fold only keeps them cheap.

The recount takes the same lock (waiting for it), so no fold moves deltas while it
compares the counters with a ``COUNT(*)`` of the rows and repairs them. It runs when an
admin asks (``POST /v1/stats/recount``, ``coupons recount``) and every
``COUPONS_STATS_RECOUNT_SECONDS``; what it found is the ``coupons_stats_drift`` gauge."""

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from app import locks
from app.schemas.stats import Drift, RecountReport
from app.services.stats import sql

logger = logging.getLogger(__name__)

FOLD_BATCH = 50_000  # deltas per transaction of a fold
_LOCK = locks.name(locks.Namespace.STATS)


class StatsFolder:
    """The process's folder task and the recount, created by the lifespan."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        *,
        interval: float,
        recount_every: float,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._recount_every = recount_every
        self._task: asyncio.Task[None] | None = None
        self._drift = Gauge(
            "coupons_stats_drift",
            "Codes the last recount found miscounted by the statistics' counters "
            "(0: exact), per status",
            ["status"],
            registry=registry,
        )
        self._repaired = Counter(
            "coupons_stats_drift_repaired",
            "Codes miscounted by the counters that recounts repaired",
            registry=registry,
        )
        for status in ("available", "assigned", "redeemed", "void", "delivered"):
            self._drift.labels(status).set(0)

    async def fold(self) -> int:
        """Fold every delta committed so far (unless another process is folding):
        the number of deltas moved."""
        moved = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                if not await connection.fetchval(locks.TRY_XACT_LOCK, _LOCK):
                    return moved
                batch = int(await connection.fetchval(sql.FOLD, FOLD_BATCH))
            moved += batch
            if batch < FOLD_BATCH:
                return moved

    async def recount(self, set_id: uuid.UUID | None = None) -> RecountReport:
        """Compare the counters of one set (or all) with a count of the rows, repair
        them, and say what differed."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(locks.XACT_LOCK, _LOCK)
            rows = await connection.fetch(sql.RECOUNT_STOCK, set_id)
            delivered = int(await connection.fetchval(sql.RECOUNT_DELIVERED, set_id))
        drift = [Drift(**dict(row)) for row in rows if row["set_key"] is not None]
        statuses = ("available", "assigned", "redeemed", "void")
        by_status: dict[str, Any] = {s: sum(abs(getattr(d, s)) for d in drift) for s in statuses}
        repaired = sum(by_status.values()) + delivered
        if set_id is None:
            for status, codes in (*by_status.items(), ("delivered", delivered)):
                self._drift.labels(status).set(codes)
        if repaired:
            self._repaired.inc(repaired)
            logger.warning("the statistics' counters were off by %d codes; repaired", repaired)
        return RecountReport(drift=drift, delivered_drift=delivered, repaired=repaired)

    async def _run(self) -> None:
        since_recount = 0.0
        while True:
            await asyncio.sleep(self._interval)
            since_recount += self._interval
            try:
                await self.fold()
                if self._recount_every and since_recount >= self._recount_every:
                    since_recount = 0.0
                    await self.recount()
            except Exception:  # the database away, or anything else: next round
                logger.warning("could not fold the statistics' deltas", exc_info=True)

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
