import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN_SECRET, make_client
from tests.helpers import create_set, problem_type

KeyClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def test_create_key_shows_the_secret_once(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/api-keys", json={"name": "checkout service", "scopes": ["redeem", "read"]}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("cpn_")
    assert created["secret"].startswith(created["prefix"])
    assert created["scopes"] == ["redeem", "read"]
    assert response.headers["location"] == f"/v1/api-keys/{created['id']}"
    fetched = (await client.get(f"/v1/api-keys/{created['id']}")).json()
    listed = (await client.get("/v1/api-keys")).json()["items"]
    assert "secret" not in fetched
    assert all("secret" not in item for item in listed)
    assert created["secret"] not in str(listed)


async def test_keys_are_stored_hashed(client: httpx.AsyncClient, app: FastAPI) -> None:
    secret = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["read"]})).json()[
        "secret"
    ]
    async with app.state.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert secret not in str(rows)
    digests = {row["secret_sha256"] for row in rows}
    assert hashlib.sha256(secret.encode()).hexdigest() in digests


async def test_requests_without_a_valid_key_are_unauthorized(
    anonymous: httpx.AsyncClient,
) -> None:
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer cpn_not-a-real-key"},
        {"Authorization": f"Basic {ADMIN_SECRET}"},
        {"Authorization": "Bearer"},
    ]
    for headers in cases:
        for method, path in [
            ("GET", "/v1/coupon-sets"),
            ("POST", "/v1/coupon-sets"),
            ("GET", "/v1/api-keys"),
            ("GET", "/metrics"),
            ("GET", "/v1/coupon-sets/any/pools"),
        ]:
            response = await anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert problem_type(response) == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unauthenticated_callers_learn_nothing_about_sets(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = await create_set(client)
    known = await anonymous.get(f"/v1/coupon-sets/{created['id']}")
    unknown = await anonymous.get("/v1/coupon-sets/no-such-set")
    assert known.status_code == unknown.status_code == 401


async def test_health_and_docs_need_no_key(anonymous: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert (await anonymous.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("scopes", "allowed", "refused"),
    [
        (
            ["read"],
            ["GET /v1/coupon-sets", "GET /metrics"],
            ["POST /v1/coupon-sets", "GET /v1/api-keys"],
        ),
        (["write"], ["GET /v1/coupon-sets", "POST /v1/coupon-sets"], ["GET /v1/api-keys"]),
        (["assign"], [], ["GET /v1/coupon-sets", "POST /v1/coupon-sets", "GET /v1/api-keys"]),
        (["redeem"], [], ["GET /v1/coupon-sets", "POST /v1/coupon-sets", "GET /metrics"]),
        (["admin"], ["GET /v1/coupon-sets", "POST /v1/coupon-sets", "GET /v1/api-keys"], []),
    ],
)
async def test_scopes_are_enforced(
    key_client: KeyClient, scopes: list[str], allowed: list[str], refused: list[str]
) -> None:
    async with await key_client(*scopes) as http:
        for call in allowed + refused:
            method, path = call.split()
            response = await http.request(
                method, path, json={"label": "x"} if method == "POST" else None
            )
            if call in allowed:
                assert response.status_code in (200, 201), (call, response.text)
            else:
                assert response.status_code == 403, (call, response.text)
                assert problem_type(response) == "forbidden"
                assert response.json()["required_scope"] in ("read", "write", "admin")


async def test_a_revoked_key_stops_working(client: httpx.AsyncClient, app: FastAPI) -> None:
    created = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["read"]})).json()
    async with make_client(app, created["secret"]) as http:
        assert (await http.get("/v1/coupon-sets")).status_code == 200
        assert (await client.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
        assert (await http.get("/v1/coupon-sets")).status_code == 401
    again = await client.delete(f"/v1/api-keys/{created['id']}")
    assert again.status_code == 204, "revoking twice changes nothing"
    gone = await client.get(f"/v1/api-keys/{created['id']}")
    assert gone.status_code == 404, "a revoked key is deleted"
    assert problem_type(gone) == "not-found"
    listed = {k["id"]: k for k in (await client.get("/v1/api-keys")).json()["items"]}
    assert listed[created["id"]]["revoked_at"] is not None


async def test_an_expired_key_is_refused(client: httpx.AsyncClient, app: FastAPI) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    live = await client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["read"], "expires_at": later}
    )
    dying = await client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["read"], "expires_at": soon}
    )
    await asyncio.sleep(1.2)
    async with make_client(app, live.json()["secret"]) as http:
        assert (await http.get("/v1/coupon-sets")).status_code == 200
    async with make_client(app, dying.json()["secret"]) as http:
        assert (await http.get("/v1/coupon-sets")).status_code == 401


async def test_a_key_cannot_be_created_expired(client: httpx.AsyncClient) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    response = await client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["read"], "expires_at": past}
    )
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    assert response.json()["errors"][0]["loc"] == ["body", "expires_at"]
    assert "must be in the future" in response.text


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_dates_out_of_range_are_refused_as_such(
    client: httpx.AsyncClient, instant: str
) -> None:
    await create_set(client, key="ranged")
    for method, path, body in [
        ("POST", "/v1/coupon-sets", {"label": "x", "valid_from": instant}),
        ("PATCH", "/v1/coupon-sets/ranged", {"valid_until": instant}),
        ("POST", "/v1/redemptions", {"code": "X1", "redeemed_at": instant}),
        ("POST", "/v1/api-keys", {"name": "k", "scopes": ["read"], "expires_at": instant}),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert problem_type(response) == "validation-error"
        assert "must fall between 0001-01-01T00:00:00Z and 9999-12-31" in response.text, path
        assert "cannot be stored" not in response.text


async def test_the_last_admin_key_cannot_be_revoked(client: httpx.AsyncClient) -> None:
    keys = (await client.get("/v1/api-keys")).json()["items"]
    (admin,) = [key for key in keys if "admin" in key["scopes"]]
    response = await client.delete(f"/v1/api-keys/{admin['id']}")
    assert response.status_code == 409
    assert problem_type(response) == "last-admin-key"
    second = (await client.post("/v1/api-keys", json={"name": "a2", "scopes": ["admin"]})).json()
    assert (await client.delete(f"/v1/api-keys/{admin['id']}")).status_code == 204
    assert (await client.get("/v1/api-keys")).status_code == 401, "the caller revoked itself"
    assert second["scopes"] == ["admin"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": ["superuser"]},
        {"name": "", "scopes": ["read"]},
        {"scopes": ["read"]},
        {"name": "k", "scopes": ["read"], "secret": "chosen"},
        {"name": "k", "scopes": ["read"], "expires_at": "2030-01-01T00:00:00"},
    ],
)
async def test_invalid_key_requests_are_refused(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/v1/api-keys", json=body)
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"


async def test_created_by_records_the_creating_key(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/api-keys", json={"name": "a", "scopes": ["read"]})).json()
    assert first["created_by"] is not None


async def test_api_keys_paginate(client: httpx.AsyncClient) -> None:
    for n in range(4):
        await client.post("/v1/api-keys", json={"name": f"k{n}", "scopes": ["read"]})
    first = (await client.get("/v1/api-keys", params={"limit": 3})).json()
    second = (await client.get("/v1/api-keys", params={"cursor": first["next_cursor"]})).json()
    names = [k["name"] for k in first["items"] + second["items"]]
    assert len(names) == len(set(names)) == 5  # four plus the test admin
    assert second["next_cursor"] is None


async def test_a_lookup_that_raced_the_revocation_is_not_remembered(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Issue 14: a lookup that read the key while its revocation was committing must not
    put it back in the cache: once the revocation answered, the key is refused."""
    created = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["assign"]})).json()
    cache = app.state.key_cache
    digest = hashlib.sha256(created["secret"].encode()).hexdigest()
    began, epoch = time.monotonic(), cache.epoch
    found = await cache.find_plain(created["secret"])  # read while the key is active
    assert found is not None
    assert (await client.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    cache.remember(digest, found, began, epoch)  # ... and remembered after it answered
    assert cache.active(created["secret"]) is None
    assert await cache.find_plain(created["secret"]) is None


async def test_a_revocation_elsewhere_empties_the_cache_at_the_next_check(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Another instance revoked the key (straight in the database): this process stops
    trusting what it remembered at its next revision check (every 0.5 s)."""
    created = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["assign"]})).json()
    cache = app.state.key_cache
    for _ in range(20):  # the process's own check may empty the cache meanwhile: again
        await cache.check()
        assert await cache.find_plain(created["secret"]) is not None
        if cache.active(created["secret"]) is not None:
            break
    assert cache.active(created["secret"]) is not None
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": created["id"]}
        )
    await cache.check()
    assert cache.active(created["secret"]) is None
    assert await cache.find_plain(created["secret"]) is None
