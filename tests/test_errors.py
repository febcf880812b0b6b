"""Every error is problem+json, the framework's own included; no traceback leaks."""

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.errors import IdempotencyKeyInUse, NotFound, PoolExhausted, UnknownCode
from app.main import create_app
from app.openapi import render_problems
from app.services import coupon_sets
from app.settings import Settings
from tests.conftest import ADMIN_SECRET, make_client
from tests.helpers import add_codes, create_set, problem_type


async def test_unknown_route_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert problem_type(response) == "not-found"
    assert response.json()["instance"] == "/v1/nothing-here"


async def test_wrong_method_is_a_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/coupon-sets")
    assert response.status_code == 405
    assert problem_type(response) == "method-not-allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


async def test_malformed_json_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/coupon-sets", content=b'{"label": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    assert response.json()["errors"][0]["type"] == "json_invalid"


async def test_validation_problems_name_fields_and_echo_no_input(
    client: httpx.AsyncClient,
) -> None:
    secret_looking = "s3cr3t-value-that-must-not-echo"
    response = await client.post(
        "/v1/coupon-sets", json={"label": "", "kind": secret_looking, "max_uses": "many"}
    )
    assert response.status_code == 422
    body = response.json()
    locs = {tuple(error["loc"]) for error in body["errors"]}
    assert {("body", "label"), ("body", "kind"), ("body", "max_uses")} <= locs
    assert "(and " in body["detail"]
    assert secret_looking not in response.text


async def test_unexpected_errors_are_logged_and_hidden(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal detail: /srv/secret/path")

    monkeypatch.setattr(coupon_sets, "list_coupon_sets", explode)
    request_id = uuid.uuid4().hex
    response = await client.get("/v1/coupon-sets", headers={"X-Request-ID": request_id})
    assert response.status_code == 500
    assert problem_type(response) == "internal-error"
    assert "secret/path" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] == request_id
    assert response.json()["request_id"] == request_id
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged
    assert logged[-1].exc_info is not None


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = uuid.uuid4().hex
    echoed = await client.get("/healthz", headers={"X-Request-ID": given})
    made = await client.get("/healthz")
    assert echoed.headers["x-request-id"] == given
    assert len(made.headers["x-request-id"]) == 32
    problem = await client.get("/v1/coupon-sets/none", headers={"X-Request-ID": given})
    assert problem.json()["request_id"] == given


async def test_a_body_over_the_limit_is_refused_before_parsing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = b'{"label": "' + b"x" * settings.max_body_bytes + b'"}'
    response = await client.post(
        "/v1/coupon-sets", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert problem_type(response) == "payload-too-large"
    assert (await client.get("/v1/coupon-sets")).json()["items"] == []


async def test_a_streamed_body_over_the_limit_is_cut_off(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"label": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/v1/coupon-sets", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert problem_type(response) == "payload-too-large"


@pytest.fixture
async def unreachable_app() -> AsyncIterator[FastAPI]:
    """An app whose database does not answer (nothing listens on port 1)."""
    settings = Settings(environment="test", db_pool_timeout=1)
    app = create_app(settings, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    async with LifespanManager(app):
        yield app


async def test_an_unreachable_database_is_a_503_with_retry_after(
    unreachable_app: FastAPI,
) -> None:
    async with make_client(unreachable_app) as http:
        response = await http.get("/v1/coupon-sets")
        ready = await http.get("/readyz")
    assert response.status_code == 503
    assert problem_type(response) == "service-unavailable"
    assert response.headers["retry-after"] == "1"
    assert ready.status_code == 503
    assert "retry-after" in ready.headers


def test_every_problem_type_is_documented() -> None:
    documented = (Path(__file__).resolve().parent.parent / "docs" / "problems.md").read_text()
    assert documented == render_problems(), "docs/problems.md is stale: run `make openapi`"
    for kind in (NotFound, PoolExhausted, IdempotencyKeyInUse, UnknownCode):
        assert f"`urn:coupons:problem:{kind.slug}`" in documented


async def test_a_saturated_connection_pool_is_a_503_then_recovers(database_url: str) -> None:
    settings = Settings(
        environment="test",
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout=0.5,
        admin_api_key=ADMIN_SECRET,
    )
    app = create_app(settings, database_url=database_url)
    async with LifespanManager(app), make_client(app) as http:
        # The only connection is taken, as by a slow request.
        async with app.state.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            started = time.monotonic()
            busy = await http.get("/v1/coupon-sets")
            waited = time.monotonic() - started
        recovered = await http.get("/v1/coupon-sets")
    assert busy.status_code == 503
    assert problem_type(busy) == "service-unavailable"
    assert busy.headers["retry-after"] == "1"
    assert waited < 5, "refused within the pool timeout, not hung"
    assert recovered.status_code == 200


async def test_a_saturated_plain_pool_is_a_503_on_the_hot_paths_too(database_url: str) -> None:
    settings = Settings(
        environment="test", db_pool_size=1, db_pool_timeout=0.5, admin_api_key=ADMIN_SECRET
    )
    app = create_app(settings, database_url=database_url)
    async with LifespanManager(app), make_client(app) as http:
        key = f"busy-{uuid.uuid4().hex[:8]}"
        await create_set(http, key=key)
        await add_codes(http, key, [key])
        # The plain asyncpg pool's only connection is taken, as by a slow export.
        held = await app.state.driver_pool.acquire()
        try:
            started = time.monotonic()
            answers = [
                await http.post(f"/v1/coupon-sets/{key}/assignments", json={"recipient_id": "r"}),
                await http.post("/v1/redemptions", json={"code": key}),
                await http.post("/v1/redemptions/validate", json={"code": key}),
            ]
            waited = time.monotonic() - started
        finally:
            await app.state.driver_pool.release(held)
        recovered = await http.post(
            f"/v1/coupon-sets/{key}/assignments", json={"recipient_id": "r"}
        )
    for busy in answers:
        assert busy.status_code == 503, busy.text
        assert problem_type(busy) == "service-unavailable"
        assert busy.headers["retry-after"] == "1"
    assert waited < 10, "each refused within the pool timeout, not hung"
    assert recovered.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"label": "nul \u0000 inside"},
        {"label": "x", "description": "lone \ud82f surrogate"},
        {"label": "x", "metadata": {"deep": ["ok", "nul\u0000"]}},
        {"label": "x", "metadata": {"k\u0000": 1}},
    ],
)
async def test_text_the_database_cannot_store_is_a_validation_problem(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    # json.dumps escapes what httpx would refuse to encode (a lone surrogate as \\ud82f).
    response = await client.post(
        "/v1/coupon-sets",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert problem_type(response) == "validation-error"


async def test_unstorable_text_in_the_query_or_path_is_a_validation_problem(
    client: httpx.AsyncClient,
) -> None:
    for response in (
        await client.get("/v1/coupon-sets", params={"q": "a\u0000b"}),
        await client.get("/v1/coupon-sets/a%00b"),
    ):
        assert response.status_code == 422, response.text
        assert problem_type(response) == "validation-error"


async def test_an_undecodable_body_is_a_bad_request_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/coupon-sets", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert problem_type(response) == "bad-request"
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_deadlock_is_a_503_to_retry(database_url: str) -> None:
    # Two transactions that wait for each other: PostgreSQL rolls one back (40P01), and
    # a retry of that request can succeed.
    app = create_app(Settings(environment="test"), database_url=database_url)
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    error = sqlalchemy.exc.DBAPIError("INSERT ...", {}, Exception())
    error.orig.__cause__ = deadlock  # type: ignore[union-attr]

    @app.get("/deadlock")
    async def _deadlocked() -> None:
        raise error

    async with LifespanManager(app), make_client(app) as http:
        response = await http.get("/deadlock")
    assert response.status_code == 503, response.text
    assert problem_type(response) == "service-unavailable"
    assert response.headers["retry-after"] == "1"
