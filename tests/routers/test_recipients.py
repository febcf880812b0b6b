import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.pagination import encode_key_cursor
from tests.helpers import add_codes, assign, create_set, problem_type, redeem


async def _pages(client: httpx.AsyncClient, path: str, limit: int) -> list[dict[str, object]]:
    """Every item of a list, page by page."""
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit, "only the last page is short"


async def _two_sets(client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring", label="Spring ☀️", valid_until="2030-01-01T00:00:00Z")
    await client.post("/v1/coupon-sets/spring/pools", json={"name": "soccer"})
    await add_codes(client, "spring", ["SP-1", "SP-2", "SP-3"])
    await add_codes(client, "spring", ["SO-1", "SO-2"], pool="soccer")
    await create_set(client, key="welcome", label="Welcome", kind="shared", shared_code="WELCOME15")


async def test_a_contacts_coupons_in_every_set(client: httpx.AsyncClient) -> None:
    await _two_sets(client)
    first = await assign(
        client, "spring", "ann", address="ann@example.com", channel="email", delivery_id="d-1"
    )
    await assign(client, "spring", "ann", pool="soccer")
    await assign(client, "spring", "ann", additional=True)
    await assign(client, "spring", "bob")
    await assign(client, "welcome", "ann", channel="sms", address="+3312345678")
    assert (await redeem(client, first.json()["code"])).status_code == 201
    assert (await redeem(client, "WELCOME15", recipient_id="ann")).status_code == 201

    response = await client.get("/v1/recipients/ann/coupons")
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 4, "bob's code is not ann's"
    unique = [i for i in items if i["kind"] == "unique"]
    assert {(i["pool"], i["status"]) for i in unique} == {
        ("default", "redeemed"),
        ("default", "assigned"),
        ("soccer", "assigned"),
    }
    redeemed = next(i for i in unique if i["status"] == "redeemed")
    assert redeemed["code"] == first.json()["code"]
    assert (redeemed["address"], redeemed["channel"], redeemed["delivery_id"]) == (
        "ann@example.com",
        "email",
        "d-1",
    )
    assert redeemed["redeemed_at"]
    assert redeemed["assigned_at"]
    assert redeemed["set_key"] == "spring"
    assert redeemed["set_label"] == "Spring ☀️"
    assert redeemed["valid_until"].startswith("2030-01-01")
    shared = next(i for i in items if i["kind"] == "shared")
    assert (shared["code"], shared["pool"], shared["status"]) == ("WELCOME15", None, "redeemed")
    assert (shared["channel"], shared["address"]) == ("sms", "+3312345678")
    assert shared["redeemed_at"]
    assert shared["valid_until"] is None
    sets = [i["set_id"] for i in items]
    assert sets == sorted(sets), "grouped by set"


async def test_a_shared_code_not_redeemed_is_assigned(client: httpx.AsyncClient) -> None:
    await _two_sets(client)
    await assign(client, "welcome", "ann")
    held = (await redeem(client, "WELCOME15", recipient_id="ann", hold_seconds=60)).json()
    items = (await client.get("/v1/recipients/ann/coupons")).json()["items"]
    assert [(i["status"], i["redeemed_at"]) for i in items] == [("assigned", None)]
    await client.post(f"/v1/redemptions/{held['id']}/confirm")
    items = (await client.get("/v1/recipients/ann/coupons")).json()["items"]
    assert items[0]["status"] == "redeemed"


async def test_an_unknown_recipient_has_empty_lists(client: httpx.AsyncClient) -> None:
    for path in ("/v1/recipients/nobody/coupons", "/v1/recipients/nobody/activity"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"items": [], "next_cursor": None}


async def test_coupons_page_through_both_kinds_without_gaps(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create_set(client, key=f"u{n}")
        await add_codes(client, f"u{n}", [f"U{n}-{m}" for m in range(3)])
        for _ in range(3):
            assert (await assign(client, f"u{n}", "ann", additional=True)).status_code == 201
        await create_set(client, key=f"s{n}", kind="shared", shared_code=f"SHARED{n}")
        await assign(client, f"s{n}", "ann")
        await assign(client, f"s{n}", "ann", additional=True)
    everything = await _pages(client, "/v1/recipients/ann/coupons", limit=200)
    assert len(everything) == 15
    for limit in (1, 2, 5, 15):
        assert await _pages(client, "/v1/recipients/ann/coupons", limit=limit) == everything
    exact = (await client.get("/v1/recipients/ann/coupons", params={"limit": 15})).json()
    assert exact["next_cursor"] is None, "a full last page says that nothing follows"


@pytest.mark.parametrize(("recipient", "in_path"), [("team/ann", "team%2Fann"), ("a\nb", "a%0Ab")])
async def test_a_recipient_id_with_a_slash_or_a_line_break(
    client: httpx.AsyncClient, recipient: str, in_path: str
) -> None:
    await _two_sets(client)
    await assign(client, "spring", recipient)
    items = (await client.get(f"/v1/recipients/{in_path}/coupons")).json()["items"]
    assert len(items) == 1
    activity = (await client.get(f"/v1/recipients/{in_path}/activity")).json()["items"]
    assert [a["action"] for a in activity] == ["assigned"]


async def test_a_bad_cursor_is_a_422_problem(client: httpx.AsyncClient) -> None:
    await _two_sets(client)
    await assign(client, "spring", "ann")

    moment = "1767225600000000"  # 2026-01-01, in microseconds since 1970
    activity_cursor = encode_key_cursor(moment, 1, 5)
    set_id = "ab" * 16
    bad = {
        "coupons": [
            "not-a-cursor!",
            "nope.1",
            set_id,
            f"{set_id.upper()}.1",
            activity_cursor,
            "5",
        ],
        "activity": [
            "%%%",
            f"{moment}.7.5",  # no such source
            f"{moment}.1.x",
            f"{moment}.0.5",  # a hold's id is a uuid
            encode_key_cursor(set_id, 1),
        ],
    }
    for kind, cursors in bad.items():
        for cursor in cursors:
            response = await client.get(f"/v1/recipients/ann/{kind}", params={"cursor": cursor})
            assert response.status_code == 422, (kind, cursor)
            assert problem_type(response) == "invalid-cursor"


async def test_the_lists_need_a_read_key(
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    key_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    reader = await key_client("read")
    assigner = await key_client("assign")
    for kind in ("coupons", "activity"):
        path = f"/v1/recipients/ann/{kind}"
        assert (await reader.get(path)).status_code == 200
        assert (await assigner.get(path)).status_code == 403
        assert (await anonymous.get(path)).status_code == 401


async def _expire(app: FastAPI, redemption_id: str) -> None:
    await asyncio.sleep(0.01)
    """End a hold a millisecond after it began (what waiting for it would do)."""
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE redemptions SET hold_expires_at = redeemed_at + interval '1 millisecond' "
                "WHERE id = :id"
            ),
            {"id": redemption_id},
        )
    await asyncio.sleep(0.01)


async def test_activity_tells_every_action_newest_first(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _two_sets(client)
    code = (await assign(client, "spring", "ann", delivery_id="d-9")).json()["code"]
    used = (await redeem(client, code, order_id="o-1")).json()
    await client.post(f"/v1/redemptions/{used['id']}/rollback")
    held = (await redeem(client, code, order_id="o-2", hold_seconds=60)).json()
    await client.post(f"/v1/redemptions/{held['id']}/release")
    held = (await redeem(client, code, order_id="o-3", hold_seconds=60)).json()
    await _expire(app, held["id"])  # a unique code's hold that ran out: still 'held'

    held = (await redeem(client, code, order_id="o-4", hold_seconds=60)).json()
    await client.post(f"/v1/redemptions/{held['id']}/confirm")
    await client.post(f"/v1/redemptions/{held['id']}/rollback")
    await client.post(f"/v1/coupon-sets/spring/codes/{code}/return", json={"reason": "bounced"})
    soccer = (await assign(client, "spring", "ann", pool="soccer")).json()["code"]
    await client.post(f"/v1/coupon-sets/spring/codes/{soccer}/void")
    await assign(client, "welcome", "ann")
    shared = (await redeem(client, "WELCOME15", recipient_id="ann", hold_seconds=60)).json()
    await _expire(app, shared["id"])
    await assign(client, "spring", "bob")  # not ann's

    events = await _pages(client, "/v1/recipients/ann/activity", limit=200)
    rows = [(e["action"], e["code"], e["pool"], e["order_id"]) for e in reversed(events)]
    assert rows == [
        ("assigned", code, "default", None),
        ("redeemed", code, "default", "o-1"),
        ("rolled_back", code, "default", "o-1"),
        ("held", code, "default", "o-2"),
        ("hold_released", code, "default", "o-2"),
        ("held", code, "default", "o-3"),
        ("hold_expired", code, "default", "o-3"),
        ("held", code, "default", "o-4"),
        ("hold_confirmed", code, "default", "o-4"),
        ("rolled_back", code, "default", "o-4"),
        ("returned", code, "default", None),
        ("assigned", soccer, "soccer", None),
        ("voided", soccer, "soccer", None),
        ("assigned", "WELCOME15", None, None),
        ("held", "WELCOME15", None, None),
        ("hold_expired", "WELCOME15", None, None),
    ]
    assert events[-1]["delivery_id"] == "d-9"
    assert {e["set_key"] for e in events} == {"spring", "welcome"}
    ats = [e["at"] for e in events]
    assert ats == sorted(ats, reverse=True)
    for limit in (1, 3, 7):
        assert await _pages(client, "/v1/recipients/ann/activity", limit=limit) == events


async def test_a_shared_hold_given_back_is_one_expiry(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A shared code's expired hold is marked `expired` by the next use of the set, and
    released later: it expired once, and was released after."""
    await _two_sets(client)
    held = (await redeem(client, "WELCOME15", recipient_id="ann", hold_seconds=60)).json()
    await _expire(app, held["id"])
    assert (await redeem(client, "WELCOME15", recipient_id="bob")).status_code == 201
    await client.post(f"/v1/redemptions/{held['id']}/release")
    events = (await client.get("/v1/recipients/ann/activity")).json()["items"]
    assert [e["action"] for e in events] == ["hold_released", "hold_expired", "held"]
    assert events[1]["redemption_id"] == held["id"]


async def test_the_set_audit_filters_by_recipient(client: httpx.AsyncClient) -> None:
    await _two_sets(client)
    await assign(client, "spring", "ann")
    await assign(client, "spring", "bob")
    await assign(client, "welcome", "ann")
    events = (
        await client.get("/v1/coupon-sets/spring/audit", params={"recipient_id": "ann"})
    ).json()["items"]
    assert [(e["action"], e["recipient_id"]) for e in events] == [("assign", "ann")]
    first = (
        await client.get(
            "/v1/coupon-sets/spring/audit", params={"recipient_id": "ann", "action": "assign"}
        )
    ).json()
    assert len(first["items"]) == 1
    assert first["next_cursor"] is None
    none = await client.get("/v1/coupon-sets/spring/audit", params={"recipient_id": "carol"})
    assert none.json()["items"] == []
