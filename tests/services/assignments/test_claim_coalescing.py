"""Coalesced claims (``ClaimCoalescer`` and ``claim_codes()``): concurrent requests of one
pool are claimed by one statement, and each still gets exactly its own answer."""

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.services import assignments
from tests.helpers import add_codes, assign, create_set


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    original = assignments.ClaimCoalescer._execute

    async def spy(self: Any, *args: Any) -> Any:
        sizes.append(len(args[-1]))
        return await original(self, *args)

    monkeypatch.setattr(assignments.ClaimCoalescer, "_execute", spy)
    return sizes


async def _audit(app: FastAPI) -> list[asyncpg.Record]:
    async with app.state.driver_pool.acquire() as connection:
        rows: list[asyncpg.Record] = await connection.fetch(
            "SELECT code, recipient_id, api_key_id, details FROM audit_events "
            "WHERE action = 'assign' ORDER BY id"
        )
    return rows


async def test_concurrent_recipients_get_distinct_codes_in_batches(
    app: FastAPI, client: httpx.AsyncClient, batch_sizes: list[int]
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", [f"C-{n:03}" for n in range(60)])
    responses = await asyncio.gather(*(assign(client, "spring", f"r{n}") for n in range(60)))
    assert Counter(r.status_code for r in responses) == {201: 60}
    by_recipient = {r.json()["recipient_id"]: r.json()["code"] for r in responses}
    assert len(by_recipient) == 60
    assert len(set(by_recipient.values())) == 60
    assert max(batch_sizes) > 1  # they were coalesced
    audited = await _audit(app)
    assert {(row["recipient_id"], row["code"]) for row in audited} == set(by_recipient.items())
    assert all(row["api_key_id"] is not None for row in audited)
    # Each recipient asking again gets their code back.
    again = await asyncio.gather(*(assign(client, "spring", f"r{n}") for n in range(60)))
    assert {r.status_code for r in again} == {200}
    assert {r.json()["recipient_id"]: r.json()["code"] for r in again} == by_recipient


async def test_one_recipient_many_times_in_a_burst_gets_one_code(
    client: httpx.AsyncClient, batch_sizes: list[int]
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", [f"C-{n:03}" for n in range(40)])
    burst = [assign(client, "spring", f"r{n % 5}") for n in range(40)]
    responses = await asyncio.gather(*burst)
    assert Counter(r.status_code for r in responses) == {201: 5, 200: 35}
    codes: dict[str, set[str]] = {}
    for response in responses:
        codes.setdefault(response.json()["recipient_id"], set()).add(response.json()["code"])
    assert all(len(held) == 1 for held in codes.values())
    assert len({next(iter(held)) for held in codes.values()}) == 5


async def test_codes_running_short_leave_the_rest_to_the_normal_answer(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="short")
    await add_codes(client, "short", [f"S-{n}" for n in range(10)])
    await create_set(client, key="fb", fallback_code="SORRY")
    await add_codes(client, "fb", [f"F-{n}" for n in range(3)])
    short = await asyncio.gather(*(assign(client, "short", f"r{n}") for n in range(25)))
    assert Counter(r.status_code for r in short) == {201: 10, 409: 15}
    assert {r.json()["type"].rsplit(":", 1)[-1] for r in short if r.status_code == 409} == {
        "pool-exhausted"
    }
    fallback = await asyncio.gather(*(assign(client, "fb", f"r{n}") for n in range(8)))
    assert Counter(r.json()["fallback"] for r in fallback) == {False: 3, True: 5}


async def test_additional_claims_are_not_coalesced_and_stay_apart(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", [f"C-{n}" for n in range(10)])
    first = await assign(client, "spring", "alice")
    extra = await asyncio.gather(
        *(assign(client, "spring", "alice", additional=True) for _ in range(4)),
        *(assign(client, "spring", "alice") for _ in range(4)),
    )
    assert [r.status_code for r in extra] == [201] * 4 + [200] * 4
    assert {r.json()["code"] for r in extra[4:]} == {first.json()["code"]}
    assert len({r.json()["code"] for r in extra[:4]} | {first.json()["code"]}) == 5


async def test_claim_codes_looks_below_the_hint_and_pairs_by_order(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2", "C-3"])
    held = await assign(client, "spring", "held")
    async with app.state.driver_pool.acquire() as connection:
        found = await connection.fetchrow(
            "SELECT s.id AS set_id, p.id AS pool_id, max(c.id) AS top FROM coupon_sets s "
            "JOIN pools p ON p.set_id = s.id JOIN codes c ON c.pool_id = p.id "
            "WHERE s.key = 'spring' GROUP BY s.id, p.id"
        )
        rows = await connection.fetch(
            "SELECT * FROM claim_codes($1, $2, 'default', $3, $4, $5, $6, $7, $8)",
            found["set_id"],
            found["pool_id"],
            ["a", "held", "b", "c"],
            ["a@x", None, None, None],
            ["email", None, None, None],
            ["d1", None, None, None],
            [uuid.uuid4()] * 4,
            found["top"] + 1000,  # a hint above every code: the claim looks again from 0
        )
    by_ord = {row["ord"]: row for row in rows}
    assert set(by_ord) == {1, 2, 3}  # "c" is left without a code: the pool ran short
    assert by_ord[2]["code"] == held.json()["code"]
    assert not by_ord[2]["created"]
    assert by_ord[1]["created"]
    assert by_ord[3]["created"]
    assert by_ord[1]["id"] < by_ord[3]["id"]
    assert (by_ord[1]["address"], by_ord[1]["channel"], by_ord[1]["delivery_id"]) == (
        "a@x",
        "email",
        "d1",
    )
    assert (await assign(client, "spring", "c")).status_code == 409


async def test_a_failing_batch_fails_each_of_its_requests(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", [f"C-{n}" for n in range(10)])
    await assign(client, "spring", "warm-up")

    async def broken(self: Any, *args: Any) -> Any:
        raise asyncpg.PostgresConnectionError("gone")

    monkeypatch.setattr(assignments.ClaimCoalescer, "_execute", broken)
    responses = await asyncio.wait_for(
        asyncio.gather(*(assign(client, "spring", f"r{n}") for n in range(10))), timeout=30
    )
    assert {r.status_code for r in responses} == {503}
    assert {r.json()["type"].rsplit(":", 1)[-1] for r in responses} == {"service-unavailable"}


async def test_several_batches_in_flight_still_give_each_recipient_one_code(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    usual = app.state.claimer
    app.state.claimer = assignments.Claimer(app.state.driver_pool, max_in_flight=3, max_batch=4)
    try:
        await create_set(client, key="spring")
        await add_codes(client, "spring", [f"C-{n:03}" for n in range(50)])
        burst = [assign(client, "spring", f"r{n % 30}") for n in range(90)]
        responses = await asyncio.gather(*burst)
    finally:
        app.state.claimer = usual
    assert Counter(r.status_code for r in responses) == {201: 30, 200: 60}
    holders: dict[str, set[str]] = {}
    for response in responses:
        holders.setdefault(response.json()["recipient_id"], set()).add(response.json()["code"])
    assert all(len(codes) == 1 for codes in holders.values())
    assert len({next(iter(codes)) for codes in holders.values()}) == 30
