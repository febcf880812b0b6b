import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.helpers import add_codes, assign, create_set, redeem


async def test_every_change_of_a_code_leaves_one_audit_row(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="s")
    await add_codes(client, "s", ["C-1", "C-2"])
    await assign(client, "s", "alice")
    await assign(client, "s", "alice")  # a repeat changes nothing, so no row
    used = (await redeem(client, "C-1", recipient_id="alice")).json()
    await client.post(f"/v1/redemptions/{used['id']}/rollback")
    held = (await redeem(client, "C-1", hold_seconds=30)).json()
    await client.post(f"/v1/redemptions/{held['id']}/release")
    held = (await redeem(client, "C-1", hold_seconds=30)).json()
    await client.post(f"/v1/redemptions/{held['id']}/confirm")
    await client.post("/v1/coupon-sets/s/codes/C-2/void")
    events = (await client.get("/v1/coupon-sets/s/audit")).json()["items"]
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "add_codes",
        "assign",
        "redeem",
        "rollback",
        "hold",
        "release",
        "hold",
        "confirm",
        "void",
    ]
    keys = (await client.get("/v1/api-keys")).json()["items"]
    assert {e["api_key_id"] for e in events} == {keys[0]["id"]}
    assert all(e["created_at"] for e in events)
    assert events[-2]["code"] == "C-1"
    assert events[-2]["recipient_id"] == "alice"


async def test_the_audit_trail_is_append_only(client: httpx.AsyncClient, app: FastAPI) -> None:
    await create_set(client, key="s")
    await add_codes(client, "s", ["C-1"])
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with app.state.engine.begin() as connection:
                await connection.execute(text(statement))


async def test_audit_pages_newest_first(client: httpx.AsyncClient) -> None:
    await create_set(client, key="s")
    for n in range(3):
        await add_codes(client, "s", [f"C-{n}"])
    first = (await client.get("/v1/coupon-sets/s/audit", params={"limit": 2})).json()
    rest = await client.get("/v1/coupon-sets/s/audit", params={"cursor": first["next_cursor"]})
    ids = [e["id"] for e in first["items"] + rest.json()["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 3
