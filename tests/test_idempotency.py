"""Idempotency-Key: one effect per key, replays of the first response, refusals."""

import httpx
from fastapi import FastAPI

from app import idempotency
from tests.helpers import add_codes, create_set, problem_type


async def test_a_retry_replays_the_first_response(client: httpx.AsyncClient) -> None:
    body = {"label": "Idem", "key": "idem"}
    headers = {"Idempotency-Key": "k-1"}
    first = await client.post("/v1/coupon-sets", json=body, headers=headers)
    retry = await client.post("/v1/coupon-sets", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["location"] == first.headers["location"]
    listed = (await client.get("/v1/coupon-sets")).json()["items"]
    assert len(listed) == 1


async def test_the_same_key_with_another_body_is_refused(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-2"}
    await client.post("/v1/coupon-sets", json={"label": "A", "key": "a"}, headers=headers)
    other = await client.post("/v1/coupon-sets", json={"label": "B", "key": "b"}, headers=headers)
    assert other.status_code == 422
    assert problem_type(other) == "idempotency-key-reused"
    assert (await client.get("/v1/coupon-sets/b")).status_code == 404


async def test_keys_belong_to_one_api_key(client: httpx.AsyncClient, key_client: object) -> None:
    body = {"label": "Mine", "key": "mine"}
    await client.post("/v1/coupon-sets", json=body, headers={"Idempotency-Key": "shared"})
    async with await key_client("write") as other:  # type: ignore[operator]
        theirs = await other.post(
            "/v1/coupon-sets",
            json={"label": "Theirs", "key": "theirs"},
            headers={"Idempotency-Key": "shared"},
        )
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers


async def test_failed_requests_store_nothing(client: httpx.AsyncClient) -> None:
    await create_set(client, key="s")
    headers = {"Idempotency-Key": "k-3"}
    exhausted = await client.post(
        "/v1/coupon-sets/s/assignments", json={"recipient_id": "a"}, headers=headers
    )
    assert exhausted.status_code == 409
    await add_codes(client, "s", ["C-1"])
    retried = await client.post(
        "/v1/coupon-sets/s/assignments", json={"recipient_id": "a"}, headers=headers
    )
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers


async def test_deletes_and_patches_are_idempotent_too(client: httpx.AsyncClient) -> None:
    await create_set(client, key="gone")
    headers = {"Idempotency-Key": "k-4"}
    first = await client.delete("/v1/coupon-sets/gone", headers=headers)
    again = await client.delete("/v1/coupon-sets/gone", headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_malformed_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/coupon-sets", json={"label": "x"}, headers={"Idempotency-Key": "x" * 256}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_assignment_records_its_idempotency_key_in_the_audit(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="s")
    await add_codes(client, "s", ["C-1"])
    await client.post(
        "/v1/coupon-sets/s/assignments",
        json={"recipient_id": "a"},
        headers={"Idempotency-Key": "audit-me"},
    )
    events = (await client.get("/v1/coupon-sets/s/audit", params={"action": "assign"})).json()
    assert events["items"][0]["idempotency_key"] == "audit-me"


async def _create_sets_with_keys(client: httpx.AsyncClient, prefix: str, count: int) -> None:
    """``count`` writes with the Idempotency-Keys ``<prefix>-0``, ``<prefix>-1``, …"""
    for n in range(count):
        response = await client.post(
            "/v1/coupon-sets",
            json={"label": f"{prefix} {n}"},
            headers={"Idempotency-Key": f"{prefix}-{n}"},
        )
        assert response.status_code == 201


async def test_records_older_than_a_day_are_removed_in_batches(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _create_sets_with_keys(client, "p", 5)
    pool = app.state.driver_pool
    # Three records from more than a day ago: the first response is kept 24 hours.
    await pool.execute(
        "UPDATE idempotency_records SET created_at = now() - interval '25 hours' "
        "WHERE key IN ('p-0', 'p-1', 'p-2')"
    )
    assert await idempotency.purge_expired(pool, batch=2) == 3  # two transactions
    left = await pool.fetch("SELECT key FROM idempotency_records ORDER BY key")
    assert [row["key"] for row in left] == ["p-3", "p-4"]
    assert await idempotency.purge_expired(pool) == 0
    # A purged key is a new key again.
    again = await client.post(
        "/v1/coupon-sets", json={"label": "S0 again"}, headers={"Idempotency-Key": "p-0"}
    )
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers


async def test_a_record_being_replaced_is_not_purged(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _create_sets_with_keys(client, "r", 2)
    pool = app.state.driver_pool
    await pool.execute("UPDATE idempotency_records SET created_at = now() - interval '25 hours'")
    # A request storing a new first response for the expired key r-0, not yet committed.
    request = await pool.acquire()
    try:
        async with request.transaction():
            await request.execute(
                "UPDATE idempotency_records SET created_at = now() WHERE key = 'r-0'"
            )
            assert await idempotency.purge_expired(pool) == 1  # r-1 only
    finally:
        await pool.release(request)
    left = await pool.fetch("SELECT key FROM idempotency_records")
    assert [row["key"] for row in left] == ["r-0"]
