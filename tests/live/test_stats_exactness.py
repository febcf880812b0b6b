"""The statistics stay exact under a mixed concurrent workload against a running server:
assignments (some additional), codes added and imported, redemptions, rollbacks, holds
that expire, are released, are confirmed or stay, voids, a delivery confirmed, read and with
reported failures, on a unique set of two pools and a shared set, all at once. While it
runs the server's folder (and this process's) fold the deltas; afterwards every count of
/stats, /pools and the set list equals a COUNT(*) of the rows, folded or not."""

import asyncio
import random
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from tests.helpers import add_codes, create_set
from tests.stats_truth import assert_exact, assert_shared_exact

RECIPIENTS = 160


async def _ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


async def _customer(live: httpx.AsyncClient, n: int, rng: random.Random) -> None:
    """One recipient's story in the unique set: assigned, then maybe redeemed (and
    rolled back), held (and the hold expires, is released or confirmed), or voided."""
    pool = "vip" if n % 4 == 0 else "default"
    assigned = await live.post(
        "/v1/coupon-sets/mix/assignments",
        json={"recipient_id": f"r{n}", "pool": pool, "additional": n % 9 == 0},
    )
    if assigned.status_code == 409:  # the pool ran dry: also a count that must hold
        return
    code = (await _ok(assigned))["code"]
    fates = ["keep", "redeem", "rollback", "expire", "hold", "release", "confirm", "void"]
    fate = rng.choice(fates)
    if fate == "void":
        await _ok(await live.post(f"/v1/coupon-sets/mix/codes/{code}/void"))
    elif fate in ("redeem", "rollback"):
        used = await _ok(await live.post("/v1/redemptions", json={"code": code}))
        if fate == "rollback":
            await _ok(await live.post(f"/v1/redemptions/{used['id']}/rollback"))
    elif fate != "keep":
        seconds = 1 if fate == "expire" else 600
        hold = await _ok(
            await live.post("/v1/redemptions", json={"code": code, "hold_seconds": seconds})
        )
        if fate in ("release", "confirm"):
            await _ok(await live.post(f"/v1/redemptions/{hold['id']}/{fate}"))


async def _shared_customer(live: httpx.AsyncClient, n: int, rng: random.Random) -> None:
    await _ok(await live.post("/v1/coupon-sets/club/assignments", json={"recipient_id": f"s{n}"}))
    fate = rng.choice(["keep", "redeem", "rollback", "expire", "hold", "release", "confirm"])
    if fate == "keep":
        return
    body: dict[str, Any] = {"code": "CLUB", "recipient_id": f"s{n}"}
    if fate in ("expire", "hold", "release", "confirm"):
        body["hold_seconds"] = 1 if fate == "expire" else 600
    used = await live.post("/v1/redemptions", json=body)
    if used.status_code == 409:  # max_uses reached
        return
    use = await _ok(used)
    if fate in ("rollback", "release", "confirm"):
        await _ok(await live.post(f"/v1/redemptions/{use['id']}/{fate}"))


async def _imports(live: httpx.AsyncClient) -> None:
    for batch in range(3):
        content = "code\n" + "".join(f"IMP-{batch}-{n:03d}\n" for n in range(50))
        job = await live.post(
            "/v1/coupon-sets/mix/imports",
            data={"pool": "default"},
            files={"file": ("codes.csv", content.encode(), "text/csv")},
        )
        assert job.status_code in (201, 202), job.text
        await asyncio.sleep(0.05)


async def _added_codes(live: httpx.AsyncClient) -> None:
    for batch in range(5):
        codes = [f"ADD-{batch}-{n:02d}" for n in range(20)]
        await add_codes(live, "mix", codes, pool="vip" if batch % 2 else "default")


async def _delivery(live: httpx.AsyncClient) -> None:
    delivery = await _ok(
        await live.post(
            "/v1/deliveries",
            json={"label": "mail", "coupon_set_id": "mix", "template": "{{ coupon.code }}"},
        )
    )
    targets = [{"recipient_id": f"d{n}"} for n in range(40)]
    await _ok(
        await live.post(f"/v1/deliveries/{delivery['id']}/recipients", json={"recipients": targets})
    )
    await _ok(await live.post(f"/v1/deliveries/{delivery['id']}/confirm"))
    messages = await live.get(f"/v1/deliveries/{delivery['id']}/messages")
    assert messages.status_code == 200
    await _ok(
        await live.post(
            f"/v1/deliveries/{delivery['id']}/failures",
            json={"recipient_ids": [f"d{n}" for n in range(0, 40, 7)]},
        )
    )


async def _check(live: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await assert_exact(live, pool, "mix")
    await assert_shared_exact(live, pool, "club")


async def test_counts_equal_the_rows_after_a_mixed_concurrent_workload(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    await create_set(live, key="mix")
    await _ok(await live.post("/v1/coupon-sets/mix/pools", json={"name": "vip"}))
    await add_codes(live, "mix", [f"D-{n:03d}" for n in range(150)])
    await add_codes(live, "mix", [f"V-{n:03d}" for n in range(30)], pool="vip")
    await create_set(live, key="club", kind="shared", shared_code="CLUB", max_uses=60)
    rng = random.Random(16)
    pool: asyncpg.Pool = app.state.driver_pool

    work = [_customer(live, n, rng) for n in range(RECIPIENTS)]
    work += [_shared_customer(live, n, rng) for n in range(80)]
    work += [_imports(live), _added_codes(live), _delivery(live)]
    rng.shuffle(work)
    await asyncio.gather(*work)

    await asyncio.sleep(1.2)  # the one-second holds have expired
    await _check(live, pool)
    await app.state.stats_folder.fold()
    await _check(live, pool)
    stats = (await live.get("/v1/coupon-sets/mix/stats")).json()
    assert stats["codes"]["sent"] > 0
    assert stats["codes"]["redeemed"] > 0
    assert stats["codes"]["void"] > 0
    assert stats["codes"]["held"] > 0
    assert (await live.get("/v1/coupon-sets/club/stats")).json()["shared"]["held"] > 0
    # The recount agrees: there was nothing to repair.
    report = (await live.post("/v1/stats/recount")).json()
    assert report["repaired"] == 0, report
