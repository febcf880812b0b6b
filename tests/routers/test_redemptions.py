import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.ratelimit import RateLimiter
from tests.helpers import add_codes, assign, create_set, problem_type, redeem


@pytest.fixture
async def unique_set(client: httpx.AsyncClient) -> str:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["SPRING-AB12", "SPRING-CD34"])
    return "spring"


async def test_redeem_a_unique_code_once(client: httpx.AsyncClient, unique_set: str) -> None:
    response = await redeem(client, "spring ab12", order_id="o-1", amount="19.90")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["code"], body["set_key"], body["status"]) == ("SPRING-AB12", "spring", "redeemed")
    assert body["order_id"] == "o-1"
    assert body["amount"] == "19.90"
    again = await redeem(client, "SPRING-AB12")
    assert again.status_code == 409
    assert problem_type(again) == "already-redeemed"
    code = (await client.get("/v1/coupon-sets/spring/codes/SPRING-AB12")).json()
    assert code["status"] == "redeemed"
    assert code["redeemed_at"]


async def test_unknown_codes_are_404(client: httpx.AsyncClient, unique_set: str) -> None:
    unknown = await redeem(client, "NOPE-0000")
    wrong_set = await redeem(client, "SPRING-AB12", set="other-set")
    assert unknown.status_code == wrong_set.status_code == 404
    assert problem_type(unknown) == problem_type(wrong_set) == "unknown-code"
    assert unknown.json()["detail"] == wrong_set.json()["detail"]


async def test_a_code_in_two_sets_needs_the_set(client: httpx.AsyncClient, unique_set: str) -> None:
    await create_set(client, key="other")
    await add_codes(client, "other", ["SPRING-AB12"])
    ambiguous = await redeem(client, "SPRING-AB12")
    assert ambiguous.status_code == 409
    assert problem_type(ambiguous) == "ambiguous-code"
    assert ambiguous.json()["sets"] == ["other", "spring"]
    named = await redeem(client, "SPRING-AB12", set="other")
    assert named.status_code == 201
    assert named.json()["set_key"] == "other"


async def test_rollback_gives_the_use_back_once(client: httpx.AsyncClient, unique_set: str) -> None:
    redeemed = (await redeem(client, "SPRING-AB12")).json()
    rolled = await client.post(f"/v1/redemptions/{redeemed['id']}/rollback")
    assert rolled.status_code == 200
    assert rolled.json()["status"] == "rolled_back"
    twice = await client.post(f"/v1/redemptions/{redeemed['id']}/rollback")
    assert twice.status_code == 409
    assert problem_type(twice) == "invalid-redemption-state"
    code = (await client.get("/v1/coupon-sets/spring/codes/SPRING-AB12")).json()
    assert code["status"] == "available"
    assert (await redeem(client, "SPRING-AB12")).status_code == 201


async def test_rollback_of_an_assigned_code_keeps_its_recipient(
    client: httpx.AsyncClient, unique_set: str
) -> None:
    code = (await assign(client, unique_set, "alice")).json()["code"]
    redeemed = (await redeem(client, code, recipient_id="alice")).json()
    assert redeemed["recipient_id"] == "alice"
    await client.post(f"/v1/redemptions/{redeemed['id']}/rollback")
    after = (await client.get(f"/v1/coupon-sets/spring/codes/{code}")).json()
    assert (after["status"], after["recipient_id"]) == ("assigned", "alice")


async def test_shared_code_max_uses(client: httpx.AsyncClient) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15", max_uses=2)
    assert (await redeem(client, "welcome15")).status_code == 201
    second = await redeem(client, "WELCOME-15")
    assert second.status_code == 201
    third = await redeem(client, "WELCOME15")
    assert third.status_code == 409
    assert problem_type(third) == "max-uses-reached"
    await client.post(f"/v1/redemptions/{second.json()['id']}/rollback")
    assert (await redeem(client, "WELCOME15")).status_code == 201


async def test_shared_code_per_recipient_limit(client: httpx.AsyncClient) -> None:
    await create_set(client, key="once", kind="shared", shared_code="ONCE", per_recipient_limit=1)
    assert (await redeem(client, "ONCE", recipient_id="alice")).status_code == 201
    again = await redeem(client, "ONCE", recipient_id="alice")
    assert problem_type(again) == "max-uses-reached"
    assert again.json()["limit"] == "per_recipient"
    assert (await redeem(client, "ONCE", recipient_id="bob")).status_code == 201
    anonymous = await redeem(client, "ONCE")
    assert anonymous.status_code == 422


async def test_codes_bound_to_their_recipient(client: httpx.AsyncClient) -> None:
    await create_set(client, key="bound", bind_to_recipient=True)
    await add_codes(client, "bound", ["B-1"])
    code = (await assign(client, "bound", "alice")).json()["code"]
    stranger = await redeem(client, code, recipient_id="mallory")
    assert stranger.status_code == 409
    assert problem_type(stranger) == "recipient-mismatch"
    assert (await redeem(client, code, recipient_id="alice")).status_code == 201


async def test_voided_codes_cannot_be_redeemed(client: httpx.AsyncClient, unique_set: str) -> None:
    await client.post("/v1/coupon-sets/spring/codes/SPRING-AB12/void")
    response = await redeem(client, "SPRING-AB12")
    assert problem_type(response) == "voided"


async def test_nothing_is_redeemed_outside_the_window(client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    await create_set(
        client,
        key="past",
        kind="shared",
        shared_code="PAST",
        valid_from=(now - timedelta(days=9)).isoformat(),
        valid_until=(now - timedelta(days=1)).isoformat(),
    )
    assert problem_type(await redeem(client, "PAST")) == "expired"
    back_then = await redeem(client, "PAST", redeemed_at=(now - timedelta(days=2)).isoformat())
    assert back_then.status_code == 201, "a use that happened inside the window is recorded"


async def test_validate_changes_nothing(client: httpx.AsyncClient, unique_set: str) -> None:
    ok = (await client.post("/v1/redemptions/validate", json={"code": "spring-ab12"})).json()
    assert ok["valid"] is True
    assert ok["code"] == "SPRING-AB12"
    await redeem(client, "SPRING-AB12")
    used = (await client.post("/v1/redemptions/validate", json={"code": "SPRING-AB12"})).json()
    assert (used["valid"], used["reason"]) == (False, "already-redeemed")
    unknown = (await client.post("/v1/redemptions/validate", json={"code": "??"})).json()
    assert (unknown["valid"], unknown["reason"]) == (False, "unknown-code")
    other = (await client.post("/v1/redemptions/validate", json={"code": "SPRING-CD34"})).json()
    assert other["valid"] is True, "validating did not use the code"


async def test_hold_confirm_release_and_expiry(client: httpx.AsyncClient, unique_set: str) -> None:
    hold = await redeem(client, "SPRING-AB12", hold_seconds=60)
    assert hold.status_code == 201
    assert hold.json()["status"] == "held"
    assert problem_type(await redeem(client, "SPRING-AB12")) == "already-redeemed"
    confirmed = await client.post(f"/v1/redemptions/{hold.json()['id']}/confirm")
    assert confirmed.json()["status"] == "redeemed"
    code = (await client.get("/v1/coupon-sets/spring/codes/SPRING-AB12")).json()
    assert code["status"] == "redeemed"

    second = (await redeem(client, "SPRING-CD34", hold_seconds=60)).json()
    released = await client.post(f"/v1/redemptions/{second['id']}/release")
    assert released.json()["status"] == "released"
    assert (await client.post(f"/v1/redemptions/{second['id']}/confirm")).status_code == 409
    short = (await redeem(client, "SPRING-CD34", hold_seconds=1)).json()
    await asyncio.sleep(1.1)
    fetched = (await client.get(f"/v1/redemptions/{short['id']}")).json()
    assert fetched["status"] == "expired"
    late = await client.post(f"/v1/redemptions/{short['id']}/confirm")
    assert problem_type(late) == "hold-expired"
    assert (await redeem(client, "SPRING-CD34")).status_code == 201, "an expired hold frees it"


async def test_redeem_is_rate_limited_per_key(
    client: httpx.AsyncClient, app: FastAPI, unique_set: str
) -> None:
    default = app.state.redeem_limiter
    app.state.redeem_limiter = RateLimiter("3/minute")
    try:
        statuses = [
            (await client.post("/v1/redemptions/validate", json={"code": "X"})).status_code
            for _ in range(4)
        ]
        limited = await redeem(client, "SPRING-AB12")
    finally:
        app.state.redeem_limiter = default
    assert statuses == [200, 200, 200, 429]
    assert problem_type(limited) == "too-many-requests"
    assert int(limited.headers["retry-after"]) >= 1


async def test_redemption_needs_the_redeem_scope(key_client: object, unique_set: str) -> None:
    async with await key_client("read", "assign") as other:  # type: ignore[operator]
        assert (await redeem(other, "SPRING-AB12")).status_code == 403
        assert (await other.post("/v1/redemptions/validate", json={"code": "X"})).status_code == 403
    async with await key_client("redeem") as redeemer:  # type: ignore[operator]
        assert (await redeem(redeemer, "SPRING-AB12")).status_code == 201


async def test_unknown_redemption_ids(client: httpx.AsyncClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for path in ("", "/rollback", "/confirm", "/release"):
        method = client.get if not path else client.post
        assert (await method(f"/v1/redemptions/{missing}{path}")).status_code == 404


async def test_action_paths_are_not_taken_as_a_redemption_id(client: httpx.AsyncClient) -> None:
    wrong_method = await client.get("/v1/redemptions/validate")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    options = await client.options("/v1/redemptions/validate")
    assert "GET" not in options.headers.get("allow", "")
