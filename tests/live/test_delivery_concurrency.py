"""Deliveries against a running server: confirms racing each other and single
assignments, and a confirm interrupted by SIGTERM or a crash."""

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_SECRET, _libpq
from tests.helpers import add_codes, create_set, problem_type
from tests.live.conftest import serve

ROUNDS = int(os.environ.get("COUPONS_TEST_ROUNDS", "3"))
HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}


async def _delivery(http: httpx.AsyncClient, set_key: str, recipients: range) -> str:
    response = await http.post(
        "/v1/deliveries",
        json={
            "label": f"to {recipients}",
            "coupon_set_id": set_key,
            "template": "{{ coupon.code }}",
        },
    )
    assert response.status_code == 201, response.text
    delivery_id: str = response.json()["id"]
    ids = [f"r{n}" for n in recipients]
    for start in range(0, len(ids), 10_000):
        added = await http.post(
            f"/v1/deliveries/{delivery_id}/recipients",
            json={"recipients": [{"recipient_id": r} for r in ids[start : start + 10_000]]},
        )
        assert added.status_code == 200, added.text
    return delivery_id


async def _holders(database_url: str, set_key: str) -> dict[str, list[str]]:
    """Recipient → the codes they hold (assigned or redeemed) in the set."""
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        rows = await connection.fetch(
            "SELECT c.recipient_id, c.code FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
            " WHERE s.key = $1 AND c.recipient_id IS NOT NULL",
            set_key,
        )
    finally:
        await connection.close()
    holders: dict[str, list[str]] = {}
    for row in rows:
        holders.setdefault(row["recipient_id"], []).append(row["code"])
    return holders


async def _wait_settled(http: httpx.AsyncClient, delivery_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await http.get(f"/v1/deliveries/{delivery_id}")).json()
        if body["status"] != "sending":
            return body
        await asyncio.sleep(0.2)
    pytest.fail("the delivery kept sending")


@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_two_confirms_on_one_pool_never_give_a_code_twice(
    live: httpx.AsyncClient, database_url: str, round_: int
) -> None:
    key = f"two-{round_}"
    await create_set(live, key=key)
    await add_codes(live, key, [f"T{round_}X{n}" for n in range(150)])
    first = await _delivery(live, key, range(0, 100))
    second = await _delivery(live, key, range(100, 200))

    answers = await asyncio.gather(
        live.post(f"/v1/deliveries/{first}/confirm"), live.post(f"/v1/deliveries/{second}/confirm")
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert problem_type(refused) == "insufficient-codes"
    won = next(a for a in answers if a.status_code == 200).json()
    assert (won["status"], won["assigned"]) == ("finished", 100)
    lost_id = second if won["id"] == first else first
    lost = (await live.get(f"/v1/deliveries/{lost_id}")).json()
    assert lost["status"] != "sending"
    assert lost["assigned"] == 0

    holders = await _holders(database_url, key)
    assert len(holders) == 100
    assert all(len(codes) == 1 for codes in holders.values())
    assert len({codes[0] for codes in holders.values()}) == 100
    winners = {f"r{n}" for n in (range(0, 100) if won["id"] == first else range(100, 200))}
    assert set(holders) == winners


@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_two_confirms_that_fit_both_finish(
    live: httpx.AsyncClient, database_url: str, round_: int
) -> None:
    key = f"fit-{round_}"
    await create_set(live, key=key)
    await add_codes(live, key, [f"F{round_}X{n}" for n in range(250)])
    first = await _delivery(live, key, range(0, 100))
    second = await _delivery(live, key, range(50, 150))  # 50 targets in both

    answers = await asyncio.gather(
        live.post(f"/v1/deliveries/{first}/confirm"), live.post(f"/v1/deliveries/{second}/confirm")
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert all(b["status"] == "finished" for b in bodies)
    # Each shared target got one code, from whichever confirm came first.
    assert sum(b["assigned"] for b in bodies) == 150
    assert sum(b["kept"] for b in bodies) == 50
    holders = await _holders(database_url, key)
    assert len(holders) == 150
    assert all(len(codes) == 1 for codes in holders.values())
    assert len({codes[0] for codes in holders.values()}) == 150


async def test_single_assignments_racing_a_confirm(
    database_url: str, app: object, tmp_path: Path
) -> None:
    # Small batches, so the confirm's transactions interleave with the single claims.
    with serve(database_url, tmp_path / "server.log", confirm_batch_size="20") as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as http:
            await create_set(http, key="race")
            await add_codes(http, "race", [f"RACE{n}" for n in range(600)])
            delivery = await _delivery(http, "race", range(0, 300))

            async def single(n: int) -> httpx.Response:
                return await http.post(
                    "/v1/coupon-sets/race/assignments", json={"recipient_id": f"r{n}"}
                )

            confirm = asyncio.create_task(http.post(f"/v1/deliveries/{delivery}/confirm"))
            singles = await asyncio.gather(*(single(n) for n in range(150, 350)))
            confirmed = await confirm
            assert confirmed.status_code == 200, confirmed.text
            body = confirmed.json()
            assert body["status"] == "finished"
            assert body["assigned"] + body["kept"] == 300
            messages = (await http.get(f"/v1/deliveries/{delivery}/messages?format=jsonl")).text
    assert Counter(s.status_code for s in singles).keys() <= {200, 201}
    holders = await _holders(database_url, "race")
    assert len(holders) == 350
    assert all(len(codes) == 1 for codes in holders.values()), "someone holds two codes"
    assert len({codes[0] for codes in holders.values()}) == 350
    for response in singles:
        data = response.json()
        assert holders[data["recipient_id"]] == [data["code"]]
    for line in messages.splitlines():
        message = json.loads(line)
        assert holders[message["recipient_id"]] == [message["code"]]


@pytest.mark.parametrize("how", ["sigterm", "crash"])
async def test_an_interrupted_confirm_gives_its_codes_back(
    database_url: str, app: object, tmp_path: Path, how: str
) -> None:
    settings = {"confirm_batch_size": "20", "confirm_wait_seconds": "0"}
    size = 20_000
    with serve(database_url, tmp_path / "first.log", **settings) as (url, process):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as http:
            await create_set(http, key="stop")
            generated = await http.post(
                "/v1/coupon-sets/stop/codes/generate", json={"count": size, "length": 12}
            )
            assert generated.status_code == 201, generated.text
            delivery = await _delivery(http, "stop", range(size))
            started = await http.post(f"/v1/deliveries/{delivery}/confirm")
            assert started.status_code == 202, started.text
            await asyncio.sleep(0.5)
            progress = (await http.get(f"/v1/deliveries/{delivery}")).json()
            assert progress["status"] == "sending"
            assert 0 < progress["processed"] < size
        process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        process.wait(timeout=60)
    if how == "sigterm":
        assert process.returncode == 0
    with serve(database_url, tmp_path / "second.log", **settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as http:
            after = (await http.get(f"/v1/deliveries/{delivery}")).json()
            assert after["status"] == "failed"
            reason = "stopped" if how == "sigterm" else "restarted"
            assert reason in after["failure_reason"]
            assert await _holders(database_url, "stop") == {}, "codes were left assigned"

            again = await http.post(f"/v1/deliveries/{delivery}/confirm")
            assert again.status_code == 202
            done = await _wait_settled(http, delivery)
            assert (done["status"], done["assigned"]) == ("finished", size)
    holders = await _holders(database_url, "stop")
    assert len(holders) == size
    assert len({codes[0] for codes in holders.values()}) == size
