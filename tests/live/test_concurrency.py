"""Concurrency guarantees, proven with concurrent requests against a running server.

Each scenario runs several rounds (COUPONS_TEST_ROUNDS, 3 by default; `make test-slow`
runs 25); the database is checked after each."""

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.helpers import add_codes, create_set, redeem

ROUNDS = int(os.environ.get("COUPONS_TEST_ROUNDS", "3"))


async def gather(*requests: Awaitable[httpx.Response]) -> list[httpx.Response]:
    return list(await asyncio.gather(*requests))


async def scalar(app: FastAPI, sql: str, **params: object) -> object:
    async with app.state.engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


def problem_types(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(r.json()["type"].rsplit(":", 1)[-1] for r in responses if r.status_code >= 400)


async def test_300_recipients_race_for_100_codes(live: httpx.AsyncClient, app: FastAPI) -> None:
    for round_ in range(ROUNDS):
        key = f"race-{round_}"
        await create_set(live, key=key)
        await add_codes(live, key, [f"R{round_}-{n:03}" for n in range(100)])
        responses = await gather(
            *(
                live.post(f"/v1/coupon-sets/{key}/assignments", json={"recipient_id": f"r{n}"})
                for n in range(300)
            )
        )
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 100, 409: 200}, statuses
        assert problem_types(responses) == {"pool-exhausted": 200}
        codes = [r.json()["code"] for r in responses if r.status_code == 201]
        assert len(set(codes)) == 100
        assigned = await scalar(
            app,
            "SELECT count(DISTINCT recipient_id) FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
            " WHERE s.key = :key AND c.status = 'assigned'",
            key=key,
        )
        assert assigned == 100


async def test_50_requests_for_one_recipient_get_one_code(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    for round_ in range(ROUNDS):
        key = f"one-{round_}"
        await create_set(live, key=key)
        await add_codes(live, key, [f"O{round_}-{n}" for n in range(60)])
        responses = await gather(
            *(
                live.post(f"/v1/coupon-sets/{key}/assignments", json={"recipient_id": "alice"})
                for _ in range(50)
            )
        )
        assert Counter(r.status_code for r in responses) == {201: 1, 200: 49}
        assert len({r.json()["code"] for r in responses}) == 1
        held = await scalar(
            app,
            "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
            " WHERE s.key = :key AND c.recipient_id = 'alice'",
            key=key,
        )
        assert held == 1


async def test_100_checkouts_share_a_code_with_10_uses(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    for round_ in range(ROUNDS):
        code = f"SHARED{round_}"
        await create_set(live, key=f"shared-{round_}", kind="shared", shared_code=code, max_uses=10)
        responses = await gather(*(redeem(live, code, order_id=f"o{n}") for n in range(100)))
        assert Counter(r.status_code for r in responses) == {201: 10, 409: 90}
        assert problem_types(responses) == {"max-uses-reached": 90}
        used = await scalar(
            app,
            "SELECT count(*) FROM redemptions WHERE code = :code AND status = 'redeemed'",
            code=code,
        )
        assert used == 10


async def test_50_requests_with_one_idempotency_key_have_one_effect(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    for round_ in range(ROUNDS):
        key = f"idem-{round_}"
        await create_set(live, key=key)
        await add_codes(live, key, [f"I{round_}-{n}" for n in range(60)])
        idempotency_key = str(uuid.uuid4())
        responses = await gather(
            *(
                live.post(
                    f"/v1/coupon-sets/{key}/assignments",
                    json={"recipient_id": "bob", "additional": True},
                    headers={"Idempotency-Key": idempotency_key},
                )
                for _ in range(50)
            )
        )
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {201, 409}, statuses
        assert problem_types(responses) == {"idempotency-key-in-use": statuses[409]}
        created = [r for r in responses if r.status_code == 201]
        assert len({r.json()["code"] for r in created}) == 1
        assert sum("idempotent-replayed" not in r.headers for r in created) == 1
        replay = await live.post(
            f"/v1/coupon-sets/{key}/assignments",
            json={"recipient_id": "bob", "additional": True},
            headers={"Idempotency-Key": idempotency_key},
        )
        assert replay.json() == created[0].json()
        effects = await scalar(
            app,
            "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
            " WHERE s.key = :key AND c.recipient_id = 'bob'",
            key=key,
        )
        assert effects == 1


async def test_redeem_and_rollback_race_without_negative_usage(
    live: httpx.AsyncClient, app: FastAPI
) -> None:
    for round_ in range(ROUNDS):
        code = f"RACE{round_}"
        await create_set(live, key=f"rr-{round_}", kind="shared", shared_code=code, max_uses=5)
        first = [await redeem(live, code) for _ in range(5)]
        ids = [r.json()["id"] for r in first]
        responses = await gather(
            *(live.post(f"/v1/redemptions/{i}/rollback") for i in ids for _ in range(2)),
            *(redeem(live, code) for _ in range(10)),
        )
        rollbacks, redemptions = responses[:10], responses[10:]
        assert Counter(r.status_code for r in rollbacks) == {200: 5, 409: 5}, "one each"
        assert all(r.status_code in (201, 409) for r in redemptions)
        active = await scalar(
            app,
            "SELECT count(*) FROM redemptions WHERE code = :code AND status = 'redeemed'",
            code=code,
        )
        rolled_back = await scalar(
            app,
            "SELECT count(*) FROM redemptions WHERE code = :code AND status = 'rolled_back'",
            code=code,
        )
        assert 0 <= int(active) <= 5  # type: ignore[call-overload]
        assert rolled_back == 5
        assert active == sum(r.status_code == 201 for r in redemptions)


async def test_held_and_released_codes_all_come_back(live: httpx.AsyncClient) -> None:
    for round_ in range(ROUNDS):
        key = f"hold-{round_}"
        # "X" keeps rounds apart once separators are ignored ("H1-10" would be "H11-0").
        codes = [f"H{round_}X{n}" for n in range(20)]
        await create_set(live, key=key)
        await add_codes(live, key, codes)
        holds = await gather(*(redeem(live, c, set=key, hold_seconds=60) for c in codes))
        assert all(r.status_code == 201 for r in holds)
        released = await gather(
            *(live.post(f"/v1/redemptions/{r.json()['id']}/release") for r in holds)
        )
        assert all(r.status_code == 200 for r in released)
        pools = (await live.get(f"/v1/coupon-sets/{key}/pools")).json()["items"]
        assert pools[0]["stock"]["available"] == 20
        again = await gather(*(redeem(live, c, set=key) for c in codes))
        assert all(r.status_code == 201 for r in again), "released codes are usable"
