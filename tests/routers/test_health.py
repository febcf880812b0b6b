import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.migrations import downgrade, upgrade
from app.settings import Settings
from tests.conftest import make_client, scratch_database
from tests.helpers import create_set, problem_type


async def test_healthz(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_when_migrated(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


@pytest.fixture
async def scratch_app(server_url: str) -> AsyncIterator[tuple[FastAPI, str]]:
    async with scratch_database(server_url) as url:
        await asyncio.to_thread(upgrade, url)
        app = create_app(Settings(environment="test"), database_url=url)
        async with LifespanManager(app):
            yield app, url
        await app.state.engine.dispose()


async def test_readyz_reports_a_schema_behind_the_migrations(
    scratch_app: tuple[FastAPI, str],
) -> None:
    app, url = scratch_app
    async with make_client(app, secret=None) as http:
        await asyncio.to_thread(downgrade, url, "base")
        behind = await http.get("/readyz")
        await asyncio.to_thread(upgrade, url)
        ready = await http.get("/readyz")
    assert behind.status_code == 503
    assert problem_type(behind) == "service-unavailable"
    assert behind.json()["applied"] == []
    assert ready.status_code == 200


async def test_metrics_count_requests_per_route(client: httpx.AsyncClient) -> None:
    await create_set(client, key="m1")
    await client.get("/v1/coupon-sets/m1")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'handler="/v1/coupon-sets/{set_id}"' in text
    assert "http_requests_total" in text
    assert "http_request_duration_seconds" in text
