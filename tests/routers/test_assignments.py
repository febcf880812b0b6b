from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.helpers import add_codes, assign, create_set, problem_type


@pytest.fixture
async def set_key(client: httpx.AsyncClient) -> str:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["C-1", "C-2", "C-3"])
    return "spring"


async def test_assign_gives_a_code_then_the_same_code_again(
    client: httpx.AsyncClient, set_key: str
) -> None:
    first = await assign(
        client, set_key, "alice", address="alice@example.com", channel="email", delivery_id="d1"
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["code"] == "C-1"
    assert body["recipient_id"] == "alice"
    assert body["pool"] == "default"
    assert body["assigned_at"]
    assert body["fallback"] is False
    again = await assign(client, set_key, "alice")
    assert again.status_code == 200
    assert again.json() == body


async def test_additional_gives_another_code(client: httpx.AsyncClient, set_key: str) -> None:
    first = (await assign(client, set_key, "alice")).json()
    extra = await assign(client, set_key, "alice", additional=True)
    assert extra.status_code == 201
    assert extra.json()["code"] != first["code"]
    assert extra.json()["additional"] is True
    assert (await assign(client, set_key, "alice")).json()["code"] == first["code"]


async def test_recipients_get_distinct_codes_until_the_pool_is_exhausted(
    client: httpx.AsyncClient, set_key: str
) -> None:
    codes = [(await assign(client, set_key, f"r{n}")).json()["code"] for n in range(3)]
    assert sorted(codes) == ["C-1", "C-2", "C-3"]
    exhausted = await assign(client, set_key, "late")
    assert exhausted.status_code == 409
    assert problem_type(exhausted) == "pool-exhausted"
    assert exhausted.json()["counts"] == {
        "available": 0,
        "assigned": 3,
        "redeemed": 0,
        "void": 0,
        "total": 3,
    }


async def test_a_fallback_code_when_the_pool_is_empty(client: httpx.AsyncClient) -> None:
    await create_set(client, key="fb", fallback_code="SORRY10")
    response = await assign(client, "fb", "alice")
    assert response.status_code == 201
    assert response.json()["code"] == "SORRY10"
    assert response.json()["fallback"] is True


async def test_pools_keep_their_codes_apart(client: httpx.AsyncClient, set_key: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_key}/pools", json={"name": "soccer"})
    await add_codes(client, set_key, ["S-1"], pool="soccer")
    soccer = await assign(client, set_key, "alice", pool="soccer")
    default = await assign(client, set_key, "alice")
    assert soccer.json()["code"] == "S-1"
    assert default.json()["code"] == "C-1"
    assert problem_type(await assign(client, set_key, "bob", pool="soccer")) == "pool-exhausted"
    assert (await assign(client, set_key, "bob", pool="nope")).status_code == 404


async def test_shared_sets_give_the_shared_code(client: httpx.AsyncClient) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15")
    first = await assign(client, "welcome", "alice", channel="sms")
    again = await assign(client, "welcome", "alice")
    other = await assign(client, "welcome", "bob")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["code"] == other.json()["code"] == "WELCOME15"
    assert first.json()["pool"] is None
    assert again.json() == first.json()
    listed = (await client.get("/v1/coupon-sets/welcome/assignments")).json()["items"]
    assert [a["recipient_id"] for a in listed] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"valid_from": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "not-yet-valid"),
        (
            {
                "valid_until": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                "valid_from": (datetime.now(UTC) - timedelta(days=9)).isoformat(),
            },
            "expired",
        ),
    ],
)
async def test_nothing_is_assigned_outside_the_validity_window(
    client: httpx.AsyncClient, window: dict[str, str], problem: str
) -> None:
    await create_set(client, key="w", **window)
    await add_codes(client, "w", ["W-1"])
    response = await assign(client, "w", "alice")
    assert response.status_code == 409
    assert problem_type(response) == problem


async def test_archived_sets_assign_nothing(client: httpx.AsyncClient, set_key: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_key}/archive")
    response = await assign(client, set_key, "alice")
    assert response.status_code == 409
    assert problem_type(response) == "set-archived"


async def test_list_assignments_with_filters_and_pages(
    client: httpx.AsyncClient, set_key: str
) -> None:
    for name in ("a", "b", "c"):
        await assign(client, set_key, name, delivery_id="d1" if name != "b" else "d2")
    page = (await client.get(f"/v1/coupon-sets/{set_key}/assignments", params={"limit": 2})).json()
    rest = await client.get(
        f"/v1/coupon-sets/{set_key}/assignments", params={"cursor": page["next_cursor"]}
    )
    assert [a["recipient_id"] for a in page["items"] + rest.json()["items"]] == ["a", "b", "c"]
    d1 = await client.get(f"/v1/coupon-sets/{set_key}/assignments", params={"delivery_id": "d1"})
    assert [a["recipient_id"] for a in d1.json()["items"]] == ["a", "c"]


async def test_assignment_needs_the_assign_scope(key_client: object, set_key: str) -> None:
    async with await key_client("read") as reader:  # type: ignore[operator]
        refused = await assign(reader, set_key, "alice")
    async with await key_client("assign") as assigner:  # type: ignore[operator]
        allowed = await assign(assigner, set_key, "alice")
    assert refused.status_code == 403
    assert allowed.status_code == 201


async def test_assignment_body_is_validated(client: httpx.AsyncClient, set_key: str) -> None:
    for body in (
        {},
        {"recipient_id": ""},
        {"recipient_id": "a", "channel": "fax"},
        {"recipient_id": "a", "code": "C-1"},
    ):
        response = await client.post(f"/v1/coupon-sets/{set_key}/assignments", json=body)
        assert response.status_code == 422, body


async def test_a_set_once_assigned_cannot_be_deleted(
    client: httpx.AsyncClient, set_key: str
) -> None:
    await assign(client, set_key, "alice")
    response = await client.delete(f"/v1/coupon-sets/{set_key}")
    assert response.status_code == 409
    assert problem_type(response) == "set-in-use"
    await create_set(client, key="unused")
    await add_codes(client, "unused", ["U-1"])
    assert (await client.delete("/v1/coupon-sets/unused")).status_code == 204


async def test_a_free_code_held_at_a_checkout_is_not_handed_out(
    client: httpx.AsyncClient, set_key: str
) -> None:
    held = await client.post("/v1/redemptions", json={"code": "C-1", "hold_seconds": 60})
    assert held.status_code == 201
    assert (await assign(client, set_key, "alice")).json()["code"] == "C-2"
    await client.post(f"/v1/redemptions/{held.json()['id']}/release")
    assert (await assign(client, set_key, "bob")).json()["code"] in ("C-1", "C-3")
