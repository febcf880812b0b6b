"""An app that dispatches webhooks (the shared one does not), fast retries, and a
receiver started by the tests."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from app.settings import Settings
from tests.conftest import make_client, running
from tests.receiver import Receiver, receiving

FAST = {
    "webhook_dispatch": True,
    "webhook_allow_private": True,
    "webhook_retry_schedule": "0.2,0.4,0.8",
    "webhook_timeout_seconds": 2.0,
    "events_poll_seconds": 0.05,
}


@pytest.fixture
async def dispatching(
    app: FastAPI, settings: Settings, database_url: str
) -> AsyncIterator[FastAPI]:
    """A second app on the test database whose dispatcher runs (``app`` cleans up)."""
    async with running(settings, database_url, **FAST) as application:
        yield application


@pytest.fixture
async def http(dispatching: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(dispatching) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


async def endpoint(
    http: httpx.AsyncClient, url: str, events: list[str] | None = None, **fields: object
) -> dict[str, object]:
    response = await http.post(
        "/v1/webhook-endpoints", json={"url": url, "events": events or ["*"], **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def attempts(
    http: httpx.AsyncClient, endpoint_id: object, *, settled: int = 0, **params: str
) -> list[dict[str, object]]:
    """The endpoint's attempts, newest first, once at least ``settled`` of them are no
    longer pending (their outcome is recorded just after the receiver answered)."""
    for _ in range(100):
        page = await http.get(f"/v1/webhook-endpoints/{endpoint_id}/attempts", params=params)
        items: list[dict[str, object]] = page.json()["items"]
        if sum(a["status"] != "pending" for a in items) >= settled:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"attempts still pending: {items}")
