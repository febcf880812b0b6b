"""A request claims once at most, whichever way it goes: the lean path hands the route
the outcome of its claim, and the route does not claim again."""

import httpx

from tests.helpers import add_codes, assign, create_set, problem_type
from tests.services.assignments.helpers import post


async def _empty_sets(client: httpx.AsyncClient) -> None:
    """``fb``: an empty pool and a fallback code; ``none``: an empty pool."""
    await create_set(client, key="fb", fallback_code="SORRY10")
    await create_set(client, key="none")


async def test_a_fallback_handed_from_the_lean_path_claims_once(
    client: httpx.AsyncClient, claims: list[str], route_calls: list[str]
) -> None:
    await _empty_sets(client)
    fallback = await post(client, "fb", {"recipient_id": "late"})
    assert fallback.status_code == 201
    assert fallback.json()["fallback"] is True
    assert route_calls == ["fb"]  # handed over
    assert claims == ["many"]  # the lean path's claim (a batch of one), not the route's


async def test_an_exhausted_pool_handed_from_the_lean_path_claims_once(
    client: httpx.AsyncClient, claims: list[str], route_calls: list[str]
) -> None:
    await _empty_sets(client)
    additional = await post(client, "none", {"recipient_id": "late", "additional": True})
    assert problem_type(additional) == "pool-exhausted"
    assert route_calls == ["none"]
    assert claims == ["one"]  # additional claims are not coalesced


async def test_the_route_alone_claims_once(
    route: httpx.AsyncClient, client: httpx.AsyncClient, claims: list[str]
) -> None:
    await _empty_sets(client)
    await add_codes(client, "none", ["N-1"])
    assert (await assign(route, "none", "first")).status_code == 201
    assert (await assign(route, "none", "first")).status_code == 200
    assert problem_type(await assign(route, "none", "late")) == "pool-exhausted"
    assert (await assign(route, "fb", "late")).json()["fallback"] is True
    assert claims == ["one"] * 4


async def test_an_idempotency_key_claims_once_in_the_transaction(
    client: httpx.AsyncClient, claims: list[str]
) -> None:
    await _empty_sets(client)
    headers = {"Idempotency-Key": "k1"}
    fallback = await post(client, "fb", {"recipient_id": "late"}, **headers)
    assert fallback.json()["fallback"] is True
    assert claims == ["session"]


async def test_refusals_and_shared_sets_claim_nothing(
    client: httpx.AsyncClient, claims: list[str], route_calls: list[str]
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15")
    await create_set(client, key="archived")
    await add_codes(client, "archived", ["A-1"])
    await client.post("/v1/coupon-sets/archived/archive")
    assert (await assign(client, "welcome", "a")).status_code == 201
    assert problem_type(await assign(client, "archived", "a")) == "set-archived"
    assert problem_type(await assign(client, "nope", "a")) == "not-found"
    assert route_calls == ["welcome", "archived", "nope"]
    assert claims == []
