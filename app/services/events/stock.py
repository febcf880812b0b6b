"""A pool's stock as the low-stock alerts read it: the statistics' counters (exact, and
without counting the codes) and their forecast (app/services/stats)."""

import uuid

import asyncpg

from app.services.stats import service as stats_service
from app.services.stats import sql as stats_sql

_POOL = "SELECT set_id, created_at FROM pools WHERE id = $1"


async def available(conn: asyncpg.Connection, set_id: uuid.UUID, pool_id: uuid.UUID) -> int:
    """Free codes of the pool, exact and O(1) (the counters, not the codes)."""
    rows = await conn.fetch(stats_sql.POOL_COUNTS, set_id, pool_id)
    return sum(int(r["available"]) for r in rows)


async def days_left(conn: asyncpg.Connection, pool_id: uuid.UUID, available: int) -> float | None:
    """Days until the pool runs dry at the statistics' forecast rate; None when nothing
    is being assigned."""
    pool = await conn.fetchrow(_POOL, pool_id)
    if pool is None:
        return None
    _, daily = await stats_service.recent_activity(conn, pool["set_id"], shared=False)
    found = stats_service.forecast(daily.get(pool_id, {}), available, created_at=pool["created_at"])
    return found.days_of_stock_left
