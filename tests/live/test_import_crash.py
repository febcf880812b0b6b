"""Kill the service during a large import: nothing half-done, and a retry imports once."""

import asyncio
import contextlib
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import ADMIN_SECRET, _libpq
from tests.helpers import create_set
from tests.live.conftest import serve

HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}
ROWS = 200_000


async def _codes_in(database_url: str, key: str) -> int:
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id "
                "WHERE s.key = $1",
                key,
            )
        )
    finally:
        await connection.close()


async def _finished(http: httpx.AsyncClient, location: str) -> dict[str, object]:
    for _ in range(1200):
        job: dict[str, object] = (await http.get(location)).json()
        if job["status"] != "running":
            return job
        await asyncio.sleep(0.1)
    raise AssertionError("the import did not finish")


async def test_killing_the_service_mid_import_leaves_nothing_and_a_retry_imports_once(
    database_url: str, app: object, tmp_path: Path
) -> None:
    content = b"code\n" + b"".join(f"K-{n:07d}\n".encode() for n in range(ROWS))
    files = {"file": ("big.csv", content, "text/csv")}
    with serve(database_url, tmp_path / "first.log") as (url, process):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120) as http:
            await create_set(http, key="crash")
            upload = asyncio.create_task(http.post("/v1/coupon-sets/crash/imports", files=files))
            for _ in range(600):
                if (await http.get("/v1/coupon-sets/crash/imports")).json()["items"]:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            process.kill()
            process.wait()
            with contextlib.suppress(httpx.TransportError):
                await upload
    # All of the file or none of it: never a part.
    assert await _codes_in(database_url, "crash") in (0, ROWS)

    with serve(database_url, tmp_path / "second.log") as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120) as http:
            # The restart found the killed job without its process and marked it failed
            # (or it had committed before the kill).
            first = (await http.get("/v1/coupon-sets/crash/imports")).json()["items"][0]
            assert first["status"] in ("failed", "succeeded"), first
            retry = await http.post("/v1/coupon-sets/crash/imports", files=files)
            assert retry.status_code in (200, 201, 202), retry.text
            job = await _finished(http, retry.headers["location"])
            assert job["status"] == "succeeded", job
            assert job["accepted"] in (0, ROWS)
    assert await _codes_in(database_url, "crash") == ROWS
