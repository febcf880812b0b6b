"""The dispatcher yields to requests: while the process serves any, each of its steps
is followed by a pause that keeps its share of the time to COUPONS_WEBHOOK_BUSY_SHARE."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.services.events.dispatch import MAX_PAUSE, EventDispatcher


async def test_the_dispatcher_pauses_only_while_a_request_is_served(
    dispatching: FastAPI, http: httpx.AsyncClient
) -> None:
    events: EventDispatcher = dispatching.state.events
    assert dispatching.state.settings.webhook_busy_share == 0.1
    assert dispatching.state.in_flight.requests == 0
    assert events.pause_after(0.1) == 0.0

    # A request whose body arrives slowly stays in flight until the body is whole.
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"label": "slow", '
        await release.wait()
        yield b'"key": "yield-slow", "kind": "unique"}'

    polling = asyncio.create_task(
        http.post("/v1/coupon-sets", content=body(), headers={"content-type": "application/json"})
    )
    for _ in range(100):
        if dispatching.state.in_flight.requests:
            break
        await asyncio.sleep(0.02)
    assert dispatching.state.in_flight.requests == 1
    assert events.pause_after(0.1) == pytest.approx(0.9)  # 0.1 s of work in 1 s
    assert events.pause_after(60.0) == MAX_PAUSE

    release.set()
    assert (await polling).status_code == 201
    assert dispatching.state.in_flight.requests == 0
    assert events.pause_after(0.1) == 0.0


async def test_a_share_of_one_never_pauses(dispatching: FastAPI) -> None:
    events: EventDispatcher = dispatching.state.events
    events.settings = events.settings.model_copy(update={"webhook_busy_share": 1.0})
    dispatching.state.in_flight.requests += 1
    try:
        assert events.pause_after(0.5) == 0.0
    finally:
        dispatching.state.in_flight.requests -= 1


async def test_a_long_poll_waiting_for_events_does_not_count(
    dispatching: FastAPI, http: httpx.AsyncClient
) -> None:
    # The feed's end: page until a page is empty.
    params: dict[str, str] = {"limit": "1000"}
    while True:
        page = (await http.get("/v1/events", params=params)).json()
        params["after"] = page["next_cursor"]
        if not page["items"]:
            break
    polling = asyncio.create_task(http.get("/v1/events", params={**params, "wait": "1.5"}))
    seen = []
    for _ in range(40):  # 1.2 s of the poll's 1.5 s wait
        await asyncio.sleep(0.03)
        seen.append(dispatching.state.in_flight.requests)
    answer = await polling
    assert (answer.status_code, answer.json()["items"]) == (200, [])
    # Only while it looks (a read of the feed, milliseconds) does it count.
    assert seen.count(0) >= 0.8 * len(seen), seen
    assert dispatching.state.in_flight.requests == 0
