"""The statistics checked against the rows: every count the API shows for a set (its
stats, its pools, its glance in the set list) equals a ``COUNT(*)`` of the rows."""

from typing import Any

import asyncpg
import httpx

_UNIQUE = """
SELECT p.name,
       count(c.id) FILTER (WHERE c.status = 'available') AS available,
       count(c.id) FILTER (WHERE c.status = 'assigned') AS assigned,
       count(c.id) FILTER (WHERE c.status = 'redeemed') AS redeemed,
       count(c.id) FILTER (WHERE c.status = 'void') AS void,
       count(c.id) AS total,
       count(c.id) FILTER (
           WHERE c.status IN ('assigned', 'redeemed') AND c.delivery_id IN (
               SELECT d.id::text FROM deliveries d WHERE d.sent_at IS NOT NULL)) AS sent,
       count(c.id) FILTER (WHERE EXISTS (
           SELECT 1 FROM redemptions r WHERE r.code_id = c.id AND r.status = 'held'
             AND r.hold_expires_at > now())) AS held
FROM pools p JOIN coupon_sets s ON s.id = p.set_id LEFT JOIN codes c ON c.pool_id = p.id
WHERE s.key = $1
GROUP BY p.name, p.created_at, p.id ORDER BY p.created_at, p.id
"""

_SHARED = """
SELECT
    (SELECT count(*) FROM redemptions r WHERE r.set_id = s.id AND r.code_id IS NULL
       AND (r.status = 'redeemed' OR (r.status = 'held' AND r.hold_expires_at > now())))
    AS uses,
    (SELECT count(*) FROM shared_assignments a WHERE a.set_id = s.id AND NOT a.additional)
    AS recipients,
    (SELECT count(*) FROM redemptions r WHERE r.set_id = s.id AND r.code_id IS NULL
       AND r.status = 'held' AND r.hold_expires_at > now()) AS held,
    s.max_uses
FROM coupon_sets s WHERE s.key = $1
"""

COUNTS = ("total", "available", "assigned", "redeemed", "void", "sent", "held")


async def truth(pool: asyncpg.Pool, set_key: str) -> dict[str, Any]:
    """The counts of a unique set as COUNT(*) of its rows: {"codes": …, "pools": {name: …}}."""
    rows = await pool.fetch(_UNIQUE, set_key)
    pools = {r["name"]: {k: int(r[k]) for k in COUNTS} for r in rows}
    codes = {k: sum(p[k] for p in pools.values()) for k in COUNTS}
    return {"codes": codes, "pools": pools}


async def shared_truth(pool: asyncpg.Pool, set_key: str) -> dict[str, Any]:
    row = await pool.fetchrow(_SHARED, set_key)
    uses = int(row["uses"])
    remaining = None if row["max_uses"] is None else row["max_uses"] - uses
    return {
        "uses": uses,
        "remaining_uses": remaining,
        "recipients": int(row["recipients"]),
        "held": int(row["held"]),
    }


async def assert_exact(client: httpx.AsyncClient, pool: asyncpg.Pool, set_key: str) -> None:
    """/stats, /pools and the set list agree with the rows of a unique set."""
    expected = await truth(pool, set_key)
    stats = (await client.get(f"/v1/coupon-sets/{set_key}/stats")).json()
    assert stats["codes"] == expected["codes"]
    assert {p["name"]: p["codes"] for p in stats["pools"]} == expected["pools"]
    listed = (await client.get(f"/v1/coupon-sets/{set_key}/pools")).json()["items"]
    stock_keys = ("available", "assigned", "redeemed", "void", "total")
    assert {p["name"]: p["stock"] for p in listed} == {
        name: {k: counts[k] for k in stock_keys} for name, counts in expected["pools"].items()
    }
    page = (await client.get("/v1/coupon-sets", params={"q": set_key, "limit": 100})).json()
    glance = next(s["stats"] for s in page["items"] if s["key"] == set_key)
    glance_keys = ("total", "available", "assigned", "sent", "redeemed")
    assert glance == {k: expected["codes"][k] for k in glance_keys}


async def assert_shared_exact(client: httpx.AsyncClient, pool: asyncpg.Pool, set_key: str) -> None:
    expected = await shared_truth(pool, set_key)
    stats = (await client.get(f"/v1/coupon-sets/{set_key}/stats")).json()
    assert stats["shared"] == expected
    page = (await client.get("/v1/coupon-sets", params={"q": set_key, "limit": 100})).json()
    glance = next(s["stats"] for s in page["items"] if s["key"] == set_key)
    assert (glance["assigned"], glance["redeemed"]) == (expected["recipients"], expected["uses"])
