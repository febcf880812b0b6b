"""Low-stock alerts: after changes of a pool's stock commit, the dispatcher (which saw
them in the event order) evaluates the pool and moves its ``stock_state``, writing the
event into the outbox in the same transaction:

    ok ──(free ≤ low_stock_threshold, or days left ≤ low_stock_days)──► low  pool.low_stock
    ok, low ──(no free code)──► exhausted                                     pool.exhausted
    low, exhausted ──(back above every limit)──► ok                          pool.restocked
    exhausted ──(codes again, still low)──► low                              pool.restocked

Each fires once per crossing: the state remembers that it fired, and only a rise above
the limits re-arms ``pool.low_stock``. The claim never does this work: it costs the
assignment nothing (docs/events.md)."""

import json
import uuid
from typing import Any

import asyncpg

from app.services.events import sql, stock
from app.services.events.catalogue import EventType


def next_state(
    available: int, threshold: int | None, days: float | None, left: float | None
) -> str:
    if available == 0:
        return "exhausted"
    if threshold is not None and available <= threshold:
        return "low"
    if days is not None and left is not None and left <= days:
        return "low"
    return "ok"


def _event(before: str, after: str) -> EventType | None:
    if before == after:
        return None
    if after == "exhausted":
        return EventType.pool_exhausted
    if after == "low" and before == "ok":
        return EventType.pool_low_stock
    return EventType.pool_restocked


async def evaluate(conn: asyncpg.Connection, touched: set[tuple[uuid.UUID, str | None]]) -> int:
    """Evaluate the pools ``touched`` ((set id, pool name or None: every pool of the
    set)), inside the caller's transaction; returns the events written."""
    if not touched:
        return 0
    sets, names = zip(*sorted(touched, key=lambda t: (str(t[0]), t[1] or "")), strict=True)
    rows = await conn.fetch(sql.TOUCHED_POOLS, list(sets), list(names))
    written = 0
    for row in rows:
        threshold, days = row["low_stock_threshold"], row["low_stock_days"]
        free = await stock.available(conn, row["set_id"], row["id"])
        left = await stock.days_left(conn, row["id"], free) if days is not None else None
        after = next_state(free, threshold, days, left)
        event = _event(row["stock_state"], after)
        if event is None:
            continue
        await conn.execute(sql.SET_STOCK_STATE, row["id"], after)
        data: dict[str, Any] = {
            "set_id": str(row["set_id"]),
            "set_key": row["set_key"],
            "pool_id": str(row["id"]),
            "pool": row["name"],
            "available": free,
            "days_left": round(left, 2) if left is not None else None,
            "low_stock_threshold": threshold,
            "low_stock_days": days,
            "state": after,
        }
        await conn.execute(sql.OUTBOX, event.value, json.dumps(data))
        written += 1
    return written
