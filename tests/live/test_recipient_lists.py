"""A contact's coupons and activity while their coupons change: assignments in several
sets, redemptions, holds and rollbacks run concurrently against a running server while
readers page through both lists. Every page read meanwhile is well formed (ordered, no
repeats across its pages); afterwards both lists equal the rows in the database."""

import asyncio
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.helpers import add_codes, create_set
from tests.live.test_concurrency import gather

SETS = ("la", "lb", "lc")
PER_SET = 25


async def _all_pages(client: httpx.AsyncClient, path: str, limit: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    params: dict[str, object] = {"limit": limit}
    while True:
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


def _coupon_key(item: dict[str, object]) -> tuple[str, str, str]:
    return (str(item["set_id"]), str(item["code"]), str(item["assigned_at"]))


async def _reader(client: httpx.AsyncClient, stop: asyncio.Event) -> int:
    """Pages through both lists until told to stop; returns how many passes it made."""
    passes = 0
    while not stop.is_set():
        coupons = await _all_pages(client, "/v1/recipients/ann/coupons", limit=7)
        sets = [str(c["set_id"]) for c in coupons]
        assert sets == sorted(sets)
        activity = await _all_pages(client, "/v1/recipients/ann/activity", limit=9)
        ats = [str(a["at"]) for a in activity]
        assert ats == sorted(ats, reverse=True)
        passes += 1
    return passes


async def test_a_contacts_lists_under_concurrent_activity(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    for key in SETS:
        await create_set(live, key=key)
        await add_codes(live, key, [f"{key.upper()}-{n:03}" for n in range(2 * PER_SET)])
    await create_set(live, key="lshared", kind="shared", shared_code="LSHARED")

    stop = asyncio.Event()
    readers = [asyncio.create_task(_reader(live, stop)) for _ in range(3)]

    # Ann gets codes in every set at once (others too), plus the shared code.
    assigned = await gather(
        *[
            live.post(f"/v1/coupon-sets/{key}/assignments", json=body)
            for key in SETS
            for n in range(PER_SET)
            for body in (
                {"recipient_id": "ann", "additional": True},
                {"recipient_id": f"other-{n}"},
            )
        ],
        *[
            live.post(
                "/v1/coupon-sets/lshared/assignments",
                json={"recipient_id": "ann", "additional": True},
            )
            for _ in range(5)
        ],
    )
    assert {r.status_code for r in assigned} == {201}
    anns = [
        r.json()["code"]
        for r in assigned
        if r.json()["recipient_id"] == "ann" and r.json()["code"] != "LSHARED"
    ]

    # Then at once: redemptions, holds (some to be confirmed, some to run out),
    # shared uses, and rollbacks of earlier redemptions.
    used = await gather(*[live.post("/v1/redemptions", json={"code": c}) for c in anns[:20]])
    assert {r.status_code for r in used} == {201}
    mixed = await gather(
        *[live.post(f"/v1/redemptions/{r.json()['id']}/rollback") for r in used[:10]],
        *[
            live.post("/v1/redemptions", json={"code": c, "hold_seconds": 60, "order_id": c})
            for c in anns[20:40]
        ],
        *[
            live.post("/v1/redemptions", json={"code": "LSHARED", "recipient_id": "ann"})
            for _ in range(5)
        ],
    )
    assert {r.status_code for r in mixed} == {200, 201}
    holds = [r.json()["id"] for r in mixed if r.json().get("status") == "held"]
    assert len(holds) == 20
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE redemptions SET hold_expires_at = redeemed_at + interval '1 millisecond' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [uuid.UUID(h) for h in holds[:10]]},
        )
    settled = await gather(*[live.post(f"/v1/redemptions/{h}/confirm") for h in holds[10:]])
    assert {r.status_code for r in settled} == {200}

    stop.set()
    passes = await asyncio.gather(*readers)
    assert min(passes) >= 1

    # Afterwards: the lists are the rows.
    coupons = await _all_pages(live, "/v1/recipients/ann/coupons", limit=11)
    assert len(coupons) == len({_coupon_key(c) for c in coupons}) == 3 * PER_SET + 5
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT code, status FROM codes WHERE recipient_id = 'ann' ORDER BY code")
        )
        in_db = [(row.code, row.status) for row in rows]
        audited = await connection.scalar(
            text(
                "SELECT count(*) FROM audit_events WHERE recipient_id = 'ann' AND action IN "
                "('assign', 'redeem', 'hold', 'confirm', 'release', 'rollback', 'return', "
                "'unassign', 'void')"
            )
        )
    listed = sorted((str(c["code"]), str(c["status"])) for c in coupons if c["kind"] == "unique")
    assert listed == in_db
    assert {c["status"] for c in coupons if c["kind"] == "shared"} == {"redeemed"}

    activity = await _all_pages(live, "/v1/recipients/ann/activity", limit=13)
    assert len(activity) == audited + 10, "every audited event and the 10 holds that ran out"
    assert sum(a["action"] == "hold_expired" for a in activity) == 10
    assert sum(a["action"] == "hold_confirmed" for a in activity) == 10
    assert await _all_pages(live, "/v1/recipients/ann/activity", limit=200) == activity, (
        "pages of 13 hold the same events as one page: none twice, none missed"
    )
