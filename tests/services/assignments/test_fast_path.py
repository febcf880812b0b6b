"""The lean ASGI path of assignments answers exactly as the FastAPI route does.

Each request is sent twice: to the app (lean path on) and to an app on the same
database with the lean path off, which always takes the route. Status, headers (but
the request id) and body (but the request id) must be the same."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_client
from tests.helpers import add_codes, create_set
from tests.services.assignments.helpers import post


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.headers["x-request-id"]
    return [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]


def _body(response: httpx.Response) -> Any:
    body = response.json()
    if isinstance(body, dict) and "request_id" in body:
        assert body.pop("request_id") == response.headers["x-request-id"]
    return body


def assert_same(lean: httpx.Response, route: httpx.Response) -> None:
    assert lean.status_code == route.status_code, (lean.text, route.text)
    assert _headers(lean) == _headers(route)
    assert _body(lean) == _body(route)


async def test_a_new_code_and_a_held_code_are_answered_like_the_route(
    client: httpx.AsyncClient, route: httpx.AsyncClient, route_calls: list[str]
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2"])
    body = {"recipient_id": "alice", "address": "a@example.com", "channel": "email"}
    await post(client, "spring", {"recipient_id": "warm-up"})  # caches the key
    route_calls.clear()
    lean = await post(client, "spring", body)
    assert lean.status_code == 201
    assert route_calls == []  # the lean path answered
    held_lean = await post(client, "spring", body)
    held_route = await post(route, "spring", body)
    assert route_calls == ["spring"]
    assert held_lean.status_code == 200
    assert_same(held_lean, held_route)
    # The 201 is the same body as the 200s, byte for byte, with the same headers.
    assert lean.content == held_lean.content == held_route.content
    assert _headers(lean) == _headers(held_route)


async def test_a_set_by_id_and_a_named_pool_take_the_lean_path(
    client: httpx.AsyncClient, route: httpx.AsyncClient, route_calls: list[str]
) -> None:
    created = await create_set(client, key="spring")
    await client.post("/v1/coupon-sets/spring/pools", json={"name": "Soccer"})
    await add_codes(client, "spring", ["S-1"], pool="Soccer")
    body = {"recipient_id": "bob", "pool": "soccer", "delivery_id": "d1"}
    await post(client, "spring", {"recipient_id": "warm-up", "pool": "nope"})
    route_calls.clear()
    lean = await post(client, str(created["id"]), body)
    assert lean.status_code == 201, lean.text
    assert lean.json()["pool"] == "Soccer"
    assert route_calls == []
    assert_same(await post(client, "spring", body), await post(route, "spring", body))


@pytest.mark.parametrize(
    ("ref", "body", "headers"),
    [
        ("spring", {"recipient_id": "carol"}, {"Authorization": "Bearer nope"}),
        ("spring", {"recipient_id": "carol"}, {"Authorization": "Basic abc"}),
        ("spring", b"{not json", {}),
        ("spring", b"[" * 50_000, {}),
        ("spring", b"\xff\xfe", {}),
        ("spring", b"", {}),
        ("spring", b"[]", {}),
        ("spring", {}, {}),
        ("spring", {"recipient_id": ""}, {}),
        ("spring", {"recipient_id": "carol", "extra": 1}, {}),
        ("spring", {"recipient_id": "carol", "channel": "pigeon"}, {}),
        ("spring", {"recipient_id": "ca\u0000rol"}, {}),
        ("spring", {"recipient_id": "carol"}, {"Content-Type": "text/plain"}),
        ("nope", {"recipient_id": "carol"}, {}),
        ("spring", {"recipient_id": "carol", "pool": "nope"}, {}),
        ("empty", {"recipient_id": "carol"}, {}),
        ("archived", {"recipient_id": "carol"}, {}),
        ("later", {"recipient_id": "carol"}, {}),
        ("past", {"recipient_id": "carol"}, {}),
        ("x" * 65, {"recipient_id": "carol"}, {}),
    ],
)
async def test_refusals_are_answered_like_the_route(
    client: httpx.AsyncClient,
    route: httpx.AsyncClient,
    ref: str,
    body: object,
    headers: dict[str, str],
) -> None:
    now = datetime.now(UTC)
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1"])
    await create_set(client, key="empty")
    await create_set(client, key="archived")
    await add_codes(client, "archived", ["A-1"])
    await client.post("/v1/coupon-sets/archived/archive")
    await create_set(client, key="later", valid_from=(now + timedelta(days=1)).isoformat())
    await create_set(
        client,
        key="past",
        valid_from=(now - timedelta(days=9)).isoformat(),
        valid_until=(now - timedelta(days=1)).isoformat(),
    )
    await post(client, "spring", {"recipient_id": "warm-up"})
    lean = await post(client, ref, body, **headers)
    assert lean.status_code >= 400, lean.text
    assert_same(lean, await post(route, ref, body, **headers))


async def test_keys_without_the_assign_scope_are_refused_like_the_route(
    app: FastAPI,
    route_app: FastAPI,
    client: httpx.AsyncClient,
    key_client: Callable[..., Any],
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2"])
    reader: httpx.AsyncClient = await key_client("read")
    assigner: httpx.AsyncClient = await key_client("assign")
    secret = reader.headers["Authorization"].removeprefix("Bearer ")
    for _ in range(2):  # uncached, then cached
        async with make_client(route_app, secret=secret) as route:
            assert_same(
                await post(reader, "spring", {"recipient_id": "dan"}),
                await post(route, "spring", {"recipient_id": "dan"}),
            )
    for _ in range(2):
        assert (await post(assigner, "spring", {"recipient_id": "eve"})).status_code in (201, 200)
    async with make_client(app, secret=None) as anonymous, make_client(route_app, None) as route:
        assert_same(
            await post(anonymous, "spring", {"recipient_id": "dan"}),
            await post(route, "spring", {"recipient_id": "dan"}),
        )


async def test_exhausted_pools_and_fallback_codes_are_answered_like_the_route(
    client: httpx.AsyncClient, route: httpx.AsyncClient
) -> None:
    await create_set(client, key="fb", fallback_code="SORRY10")
    await create_set(client, key="none")
    await add_codes(client, "none", ["N-1"])
    await post(client, "none", {"recipient_id": "first"})
    lean = await post(client, "none", {"recipient_id": "late"})
    assert lean.json()["type"].endswith("pool-exhausted")
    assert_same(lean, await post(route, "none", {"recipient_id": "late"}))
    fallback = await post(client, "fb", {"recipient_id": "late"})
    assert fallback.status_code == 201
    assert fallback.json()["fallback"] is True


async def test_shared_sets_and_idempotency_keys_take_the_route(
    client: httpx.AsyncClient, route_calls: list[str]
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15")
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2"])
    await post(client, "spring", {"recipient_id": "warm-up"})
    route_calls.clear()
    assert (await post(client, "welcome", {"recipient_id": "a"})).status_code == 201
    first = await post(client, "spring", {"recipient_id": "a"}, **{"Idempotency-Key": "k1"})
    again = await post(client, "spring", {"recipient_id": "a"}, **{"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert route_calls == ["welcome", "spring"]


async def _assignments_counted(client: httpx.AsyncClient) -> float:
    """The metrics' count of successful assignment requests so far (in this process)."""
    labels = ('handler="/v1/coupon-sets/{set_id}/assignments"', 'method="POST"', 'status="2xx"')
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("http_requests_total{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_the_lean_answers(
    client: httpx.AsyncClient, route_calls: list[str]
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2", "C-3"])
    before = await _assignments_counted(client)
    for n in range(3):
        await post(client, "spring", {"recipient_id": f"m{n}"})
    assert route_calls == []  # the lean path answered them
    assert await _assignments_counted(client) == before + 3


async def test_uncached_and_revoked_keys(
    app: FastAPI,
    route_app: FastAPI,
    client: httpx.AsyncClient,
    key_client: Callable[..., Any],
    route_calls: list[str],
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2"])
    assigner: httpx.AsyncClient = await key_client("assign")
    secret = assigner.headers["Authorization"].removeprefix("Bearer ")
    app.state.key_cache.clear()
    route_calls.clear()
    # An uncached key is looked up by the lean path itself, once for concurrent requests.
    answers = await asyncio.gather(
        *(post(assigner, "spring", {"recipient_id": "dan"}) for _ in range(5))
    )
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 200, 201]
    assert route_calls == []
    key_id = next(
        k["id"] for k in (await client.get("/v1/api-keys")).json()["items"] if k["name"] == "t"
    )
    assert (await client.delete(f"/v1/api-keys/{key_id}")).status_code == 204
    async with make_client(route_app, secret=secret) as route:
        revoked = await post(assigner, "spring", {"recipient_id": "eve"})
        assert revoked.status_code == 401
        assert_same(revoked, await post(route, "spring", {"recipient_id": "eve"}))
