"""A pool's stock as the low-stock alerts read it: the one place they ask, so a better
source (counter tables, a forecast) replaces these two functions and nothing else.

Plain and correct, not fast: ``available`` counts free codes over the partial index
``ix_codes_free`` (bounded by ``at_most``: an alert only needs to know whether the count
is under its threshold), ``days_left`` divides it by the pool's assignments per day over
the last 7 days."""

import uuid

import asyncpg

from app.models.code import FREE

_AVAILABLE = f"""
SELECT count(*) FROM (
    SELECT 1 FROM codes WHERE pool_id = $1 AND {FREE} LIMIT $2
) free
"""  # noqa: S608 - FREE is a constant

# Codes of the pool assigned in the last 7 days (ix_codes_set_id_recipient_id holds the
# assigned ones; uq_codes_recipient has the pool).
_ASSIGNED_LAST_WEEK = """
SELECT count(*) FROM codes
WHERE pool_id = $1 AND recipient_id IS NOT NULL AND assigned_at > now() - interval '7 days'
"""

FORECAST_DAYS = 7


async def available(conn: asyncpg.Connection, pool_id: uuid.UUID, *, at_most: int) -> int:
    """Free codes of the pool, counted up to ``at_most`` (a larger stock reads as that)."""
    return int(await conn.fetchval(_AVAILABLE, pool_id, at_most))


async def days_left(conn: asyncpg.Connection, pool_id: uuid.UUID, available: int) -> float | None:
    """Days until the pool runs dry at the last week's pace; None without assignments."""
    assigned = int(await conn.fetchval(_ASSIGNED_LAST_WEEK, pool_id))
    if assigned == 0:
        return None
    return available / (assigned / FORECAST_DAYS)
