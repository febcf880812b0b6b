"""The confirm engine (``Confirmations``) meeting a delivery that a dead process left
``sending``: at start-up (``recover``) and at the next confirm."""

from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.services.deliveries import sql as delivery_sql
from tests.helpers import add_codes, create_set


async def _confirmed_delivery(client: httpx.AsyncClient, targets: int) -> dict[str, Any]:
    """A finished delivery of ``targets`` recipients, set back to ``sending`` as a process
    that died mid-confirm would leave it: codes handed out, nobody holding its lock."""
    await create_set(client, key="spring")
    await add_codes(client, "spring", [f"SPRING-{n:03d}" for n in range(10)])
    created = await client.post("/v1/deliveries", json={"label": "x", "coupon_set_id": "spring"})
    delivery: dict[str, Any] = created.json()
    recipients = [{"recipient_id": f"r{n}"} for n in range(targets)]
    await client.post(
        f"/v1/deliveries/{delivery['id']}/recipients", json={"recipients": recipients}
    )
    confirmed = await client.post(f"/v1/deliveries/{delivery['id']}/confirm")
    assert confirmed.json()["status"] == "finished", confirmed.text
    return delivery


async def _set_sending(app: FastAPI, delivery_id: str) -> None:
    await app.state.driver_pool.execute(
        "UPDATE deliveries SET status = 'sending' WHERE id = $1::uuid", delivery_id
    )


async def _unassigned(app: FastAPI) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await app.state.driver_pool.fetch(
        "SELECT recipient_id, details->>'reason' AS reason FROM audit_events "
        "WHERE action = 'unassign' ORDER BY recipient_id"
    )
    return rows


async def _holders(app: FastAPI) -> dict[str, str]:
    rows = await app.state.driver_pool.fetch(
        "SELECT recipient_id, code FROM codes WHERE recipient_id IS NOT NULL"
    )
    return {row["recipient_id"]: row["code"] for row in rows}


async def test_recover_fails_a_delivery_left_sending_and_gives_its_codes_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    delivery = await _confirmed_delivery(client, targets=4)
    await _set_sending(app, delivery["id"])

    await app.state.confirmations.recover()

    after = (await client.get(f"/v1/deliveries/{delivery['id']}")).json()
    assert (after["status"], after["assigned"]) == ("failed", 0)
    assert after["failure_reason"] == "interrupted: the service restarted"
    assert await _holders(app) == {}
    unassigned = await _unassigned(app)
    assert [r["recipient_id"] for r in unassigned] == ["r0", "r1", "r2", "r3"]
    assert {r["reason"] for r in unassigned} == {"interrupted: the service restarted"}


async def test_a_confirm_of_a_delivery_left_sending_gives_back_then_starts_over(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    delivery = await _confirmed_delivery(client, targets=3)
    before = await _holders(app)
    await _set_sending(app, delivery["id"])

    again = await client.post(f"/v1/deliveries/{delivery['id']}/confirm")

    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["status"], body["assigned"], body["kept"], body["messages"]) == (
        "finished",
        3,
        0,
        3,
    )
    unassigned = await _unassigned(app)
    assert [r["recipient_id"] for r in unassigned] == ["r0", "r1", "r2"]
    assert {r["reason"] for r in unassigned} == {"interrupted: confirm run again"}
    after = await _holders(app)
    assert after.keys() == before.keys() == {"r0", "r1", "r2"}
    assert len(set(after.values())) == 3
    audit = (await client.get("/v1/coupon-sets/spring/audit", params={"limit": 200})).json()
    assigns = [e for e in audit["items"] if e["action"] == "assign"]
    assert len(assigns) == 6
    assert {e["details"]["pool"] for e in assigns} == {"default"}


async def test_recover_leaves_a_delivery_that_finished_after_it_was_seen_sending(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watchdog lists the deliveries sending, then takes each one's lock: a confirm
    # that finishes in between (and so lets its lock go) must be left as it is.
    delivery = await _confirmed_delivery(client, targets=4)
    before = await _holders(app)
    seen_sending = "SELECT id, $1::float8 < 0 AS stale FROM deliveries WHERE status = 'finished'"
    monkeypatch.setattr(delivery_sql, "SENDING", seen_sending)

    await app.state.confirmations._recover()

    after = (await client.get(f"/v1/deliveries/{delivery['id']}")).json()
    assert (after["status"], after["assigned"]) == ("finished", 4)
    assert await _holders(app) == before
    assert await _unassigned(app) == []
