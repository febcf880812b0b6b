"""Test fixtures: a real PostgreSQL (embedded, or DATABASE_URL's server), migrated once.

Each test session works in a scratch database of its own, so it never touches the
data of ``make run`` nor of whatever else lives on DATABASE_URL's server. The app
commits per request like in production, so isolation between tests is by truncation."""

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text as sqltext
from sqlalchemy.engine import make_url

from app import locks
from app.embedded import EmbeddedPostgres
from app.main import create_app
from app.migrations import upgrade
from app.models import Base
from app.services.api_keys import hash_secret, provision_admin_key
from app.settings import Settings, to_asyncpg_url

ADMIN_SECRET = "test-admin-" + "k" * 24


def _libpq(url: str) -> str:
    """asyncpg.connect wants the plain postgresql:// form."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards."""
    name = f"coupons_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_libpq(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_libpq(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DATABASE_URL when set, else a throw-away embedded PostgreSQL."""
    if os.environ.get("DATABASE_URL"):
        yield to_asyncpg_url(os.environ["DATABASE_URL"])
        return
    data_dir: Path = tmp_path_factory.mktemp("postgres") / "data"
    with EmbeddedPostgres(data_dir, delete_on_exit=True) as server:
        yield server.url()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    async with scratch_database(server_url) as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # No statistics folder in the in-process app: tests fold when they mean to
    # (app.state.stats_folder.fold()); the live server folds every second.
    # The shared app sends no webhooks (tests/services/events start apps that do).
    return Settings(
        environment="test",
        database_url=database_url,
        admin_api_key=ADMIN_SECRET,
        stats_fold_seconds=0,
        webhook_dispatch=False,
        webhook_allow_private=True,
    )


@asynccontextmanager
async def running(
    settings: Settings, database_url: str, **changes: object
) -> AsyncIterator[FastAPI]:
    """The app through its lifespan, with ``changes`` to its settings."""
    application = create_app(settings.model_copy(update=changes), database_url=database_url)
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    async with running(settings, database_url) as application:
        yield application


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table after a test that used the app, but keep the admin key as it
    was provisioned (same id: processes may have it cached), active again."""
    yield
    if "app" not in request.fixturenames:
        return
    app: FastAPI = request.getfixturevalue("app")
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "api_keys")
    async with app.state.sessionmaker.begin() as session:
        # The statistics' folders (of this app and of a live server) fold under this
        # lock; holding it, the TRUNCATE cannot meet one in a deadlock.
        await session.execute(
            sqltext("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"),
            {"lock": locks.name(locks.Namespace.STATS)},
        )
        await session.execute(sqltext(f"TRUNCATE {tables} CASCADE"))
        await session.execute(
            sqltext("DELETE FROM api_keys WHERE secret_sha256 <> :admin"),
            {"admin": hash_secret(ADMIN_SECRET)},
        )
        await session.execute(sqltext("UPDATE api_keys SET revoked_at = NULL"))
        await provision_admin_key(session, secret=ADMIN_SECRET, name="test admin")
    app.state.key_cache.clear()


def make_client(app: FastAPI, secret: str | None = ADMIN_SECRET) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        headers=headers,
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the admin key."""
    async with make_client(app) as http:
        yield http


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app, secret=None) as http:
        yield http


@pytest.fixture
async def key_client(
    app: FastAPI, client: httpx.AsyncClient
) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """``await key_client("read", "assign")``: a client holding a new key with those scopes,
    closed at the end of the test (closing it earlier is fine too)."""
    made: list[httpx.AsyncClient] = []

    async def factory(*scopes: str) -> httpx.AsyncClient:
        response = await client.post("/v1/api-keys", json={"name": "t", "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        made.append(make_client(app, secret=response.json()["secret"]))
        return made[-1]

    yield factory
    for http in made:
        await http.aclose()
