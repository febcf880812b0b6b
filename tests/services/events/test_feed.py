"""The event feed: every committed event in an order a cursor never skips, even when a
transaction that drew a smaller id commits later; long-poll; filters."""

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.settings import Settings
from tests.conftest import _libpq, make_client, running
from tests.helpers import add_codes, assign, create_set, import_codes, problem_type
from tests.routers.test_deliveries import add_targets, confirm, create_delivery, targets


async def events(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def spring(client: httpx.AsyncClient) -> dict[str, Any]:
    made = await create_set(client, key="spring")
    await add_codes(client, "spring", [f"SPRING-{n}" for n in range(10)])
    return made


async def test_a_late_commit_with_a_smaller_id_is_not_skipped(
    client: httpx.AsyncClient, spring: dict[str, Any], database_url: str
) -> None:
    start = (await events(client))["next_cursor"]
    held = await asyncpg.connect(_libpq(database_url))
    try:
        transaction = held.transaction()
        await transaction.start()
        # An audit row written first (the smaller id), committed last.
        first_id = await held.fetchval(
            "INSERT INTO audit_events (set_id, action, code, recipient_id, details) "
            "VALUES ($1, 'assign', 'HELD-1', 'held', '{\"pool\": \"default\"}') RETURNING id",
            spring["id"],
        )
        assert (await assign(client, "spring", "contact-1")).status_code == 201
        # Committed, with a larger id, but a reader must not pass the open transaction.
        page = await events(client, after=start)
        assert page["items"] == []
        assert page["next_cursor"] == start
        await transaction.commit()
    finally:
        await held.close()
    page = await events(client, after=start)
    assert [(e["type"], e["data"]["code"]) for e in page["items"]][:1] == [
        ("code.assigned", "HELD-1")
    ]
    assert [e["data"]["recipient_id"] for e in page["items"]] == ["held", "contact-1"]
    assert page["items"][0]["id"] == f"evt_a{first_id}"
    assert (await events(client, after=page["next_cursor"]))["items"] == []


async def test_a_transaction_of_another_database_does_not_hold_the_feed_back(
    client: httpx.AsyncClient, spring: dict[str, Any], server_url: str
) -> None:
    start = (await events(client))["next_cursor"]
    other = await asyncpg.connect(_libpq(server_url))  # the server's own database
    try:
        async with other.transaction():
            await other.fetchval("SELECT pg_current_xact_id()")  # holds an id, writes nothing
            assert (await assign(client, "spring", "contact-1")).status_code == 201
            page = await events(client, after=start)
            assert [e["data"]["recipient_id"] for e in page["items"]] == ["contact-1"]
    finally:
        await other.close()


async def test_a_rolled_back_change_is_no_event(
    client: httpx.AsyncClient, spring: dict[str, Any], database_url: str
) -> None:
    start = (await events(client))["next_cursor"]
    held = await asyncpg.connect(_libpq(database_url))
    try:
        transaction = held.transaction()
        await transaction.start()
        await held.execute(
            "INSERT INTO audit_events (set_id, action, code) VALUES ($1, 'assign', 'GONE')",
            spring["id"],
        )
        await transaction.rollback()
    finally:
        await held.close()
    await assign(client, "spring", "contact-1")
    page = await events(client, after=start)
    assert [e["data"]["code"] for e in page["items"]] != []
    assert "GONE" not in [e["data"]["code"] for e in page["items"]]


async def test_long_poll_answers_when_an_event_commits(
    client: httpx.AsyncClient, spring: dict[str, Any]
) -> None:
    start = (await events(client))["next_cursor"]
    began = time.monotonic()
    waiting = asyncio.create_task(events(client, after=start, wait=10))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await assign(client, "spring", "contact-1")
    page = await asyncio.wait_for(waiting, 5)
    assert [e["type"] for e in page["items"]] == ["code.assigned"]
    assert time.monotonic() - began < 5
    # Nothing newer: an empty page after the wait, with the same cursor.
    began = time.monotonic()
    empty = await events(client, after=page["next_cursor"], wait=0.5)
    assert empty == {"items": [], "next_cursor": page["next_cursor"]}
    assert time.monotonic() - began >= 0.45


async def test_the_long_poll_waits_no_longer_than_the_setting_allows(
    app: FastAPI, settings: Settings, database_url: str, spring: dict[str, Any]
) -> None:
    async with (
        running(settings, database_url, events_max_wait_seconds=0.3) as capped,
        make_client(capped) as client,
    ):
        start = (await events(client))["next_cursor"]
        began = time.monotonic()
        empty = await events(client, after=start, wait=30)
    assert empty == {"items": [], "next_cursor": start}
    assert 0.25 <= time.monotonic() - began < 5


async def test_types_filter_pages_and_bad_input(
    client: httpx.AsyncClient, spring: dict[str, Any]
) -> None:
    for n in range(3):
        await assign(client, "spring", f"contact-{n}")
    code = (await assign(client, "spring", "contact-9")).json()["code"]
    assert (await client.post("/v1/redemptions", json={"code": code})).status_code == 201
    page = await events(client, types="redemption.created")
    assert [e["type"] for e in page["items"]] == ["redemption.created"]
    assert page["items"][0]["data"]["status"] == "redeemed"
    both = await events(client, types=["code.assigned", "redemption.created"], limit=2)
    assert len(both["items"]) == 2
    rest = await events(client, types="code.assigned,redemption.created", after=both["next_cursor"])
    assert len(both["items"]) + len(rest["items"]) == 5

    for params in ({"types": "code.stolen"}, {"wait": 31}, {"limit": 0}):
        refused = await client.get("/v1/events", params=params)
        assert refused.status_code == 422, params
    damaged = await client.get("/v1/events", params={"after": "bm90LWEtY3Vyc29y"})
    assert problem_type(damaged) == "invalid-cursor"


async def test_the_feed_needs_the_read_scope(client: httpx.AsyncClient, key_client: Any) -> None:
    assigner = await key_client("assign")
    assert (await assigner.get("/v1/events")).status_code == 403
    reader = await key_client("read")
    assert (await reader.get("/v1/events")).status_code == 200


async def test_finished_imports_and_deliveries_are_events(
    client: httpx.AsyncClient, spring: dict[str, Any]
) -> None:
    imported = await import_codes(client, "spring", b"code\nIMP-1\nIMP-2\nSPRING-1\n")
    assert imported.status_code in (200, 201, 202), imported.text
    delivery = await create_delivery(client, template="{{ coupon.code }}")
    await add_targets(client, delivery["id"], targets(3))
    assert (await confirm(client, delivery["id"])).json()["status"] == "finished"
    for _ in range(50):
        page = await events(client, types="import.finished,delivery.finished,code.assigned")
        if len(page["items"]) >= 5:
            break
        await asyncio.sleep(0.1)
    kinds = [e["type"] for e in page["items"]]
    assert kinds.count("import.finished") == 1
    assert kinds.count("delivery.finished") == 1
    assert kinds.count("code.assigned") == 3
    finished = next(e["data"] for e in page["items"] if e["type"] == "import.finished")
    assert (finished["set_key"], finished["status"], finished["accepted"]) == (
        "spring",
        "succeeded",
        2,
    )
    assert finished["duplicates"] == 1
    sent = next(e["data"] for e in page["items"] if e["type"] == "delivery.finished")
    assert (sent["delivery_id"], sent["status"], sent["assigned"]) == (
        delivery["id"],
        "finished",
        3,
    )
    # The delivery's assignments name it.
    assert {e["data"]["delivery_id"] for e in page["items"] if e["type"] == "code.assigned"} == {
        delivery["id"]
    }
