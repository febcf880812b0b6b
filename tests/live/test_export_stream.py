"""The export against a running server: a client that goes away mid-stream leaves
nothing running, and the next export is complete."""

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.helpers import create_set

CODES = 60_000  # three chunks


async def fill(app: FastAPI, set_id: object, count: int) -> None:
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO codes (set_id, pool_id, code, lookup)"
                " SELECT s.id, p.id, 'L-' || g, 'l' || g"
                " FROM coupon_sets s JOIN pools p ON p.set_id = s.id,"
                " generate_series(1, :count) AS g WHERE s.id = :set_id"
            ),
            {"set_id": set_id, "count": count},
        )


async def running_copies(app: FastAPI) -> int:
    async with app.state.engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE 'COPY (%' AND pid <> pg_backend_pid()"
            )
        )
        return int(found.scalar_one())


async def test_a_client_leaving_mid_export_stops_it(live: httpx.AsyncClient, app: FastAPI) -> None:
    created = await create_set(live, key="stream")
    await fill(app, created["id"], CODES)
    async with live.stream("GET", "/v1/coupon-sets/stream/export") as response:
        assert response.status_code == 200
        async for _ in response.aiter_raw():
            break  # the first piece, then hang up
    for _ in range(50):
        if await running_copies(app) == 0:
            break
        await asyncio.sleep(0.1)
    assert await running_copies(app) == 0

    complete = await live.get("/v1/coupon-sets/stream/export")
    assert complete.status_code == 200
    assert complete.text.count("\n") == CODES + 1
