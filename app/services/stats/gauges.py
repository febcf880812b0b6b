"""Per-pool Prometheus gauges: ``coupons_pool_codes{set_key, pool, status}``, read from
the counters (one short statement on the plain pool) each time ``/metrics`` is scraped.

``COUPONS_METRICS_MAX_POOLS`` bounds how many pools are exported (ordered by set key and
pool name), since every pool is four series; when it cuts, the log says so (once per
change of the numbers, not at every scrape)."""

import logging
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Gauge

from app.services.stats import sql

logger = logging.getLogger(__name__)

STATUSES = ("available", "assigned", "redeemed", "void")


class PoolGauges:
    def __init__(self, pool: asyncpg.Pool, registry: CollectorRegistry, *, max_pools: int) -> None:
        self._pool = pool
        self._max_pools = max_pools
        self._cut: tuple[int, int] | None = None
        self._gauge = Gauge(
            "coupons_pool_codes",
            "Codes of a pool per status (from the statistics' counters)",
            ["set_key", "pool", "status"],
            registry=registry,
        )

    async def refresh(self) -> None:
        """The gauges as the counters say now; pools gone since the last scrape vanish."""
        if self._max_pools == 0:
            return
        rows = await self._pool.fetch(sql.GAUGES, self._max_pools)
        self._gauge.clear()
        for row in rows:
            for status in STATUSES:
                self._gauge.labels(row["set_key"], row["pool"], status).set(row[status])
        total = int(rows[0]["pools"]) if rows else 0
        cut = (len(rows), total) if total > len(rows) else None
        if cut is not None and cut != self._cut:
            logger.warning(
                "coupons_pool_codes: exporting %d of %d pools (COUPONS_METRICS_MAX_POOLS)",
                *cut,
            )
        self._cut = cut


async def _pool_gauges(request: Request) -> PoolGauges:
    gauges: PoolGauges = request.app.state.pool_gauges
    return gauges


PoolGaugesDep = Annotated[PoolGauges, Depends(_pool_gauges)]
