"""Low-stock alerts: evaluated by the dispatcher after changes of stock commit; each
fires once per crossing."""

import asyncio
from typing import Any

import httpx

from tests.helpers import add_codes, assign, create_set, problem_type


async def pool_events(http: httpx.AsyncClient, after: str | None, count: int) -> dict[str, Any]:
    """Waits (up to 10 s) until ``count`` pool events follow ``after``."""
    params: dict[str, Any] = {"types": "pool.low_stock,pool.exhausted,pool.restocked"}
    if after:
        params["after"] = after
    for _ in range(100):
        page: dict[str, Any] = (await http.get("/v1/events", params=params)).json()
        if len(page["items"]) >= count:
            return page
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} pool events, got {page['items']}")


async def test_low_stock_fires_once_then_exhausted_then_restocked(
    http: httpx.AsyncClient,
) -> None:
    await create_set(http, key="spring")
    await add_codes(http, "spring", [f"S-{n}" for n in range(5)])
    patched = await http.patch(
        "/v1/coupon-sets/spring/pools/default", json={"low_stock_threshold": 2}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["low_stock_threshold"] == 2
    assert patched.json()["stock_state"] == "ok"

    for n in range(3):  # 5 → 2: crossed
        await assign(http, "spring", f"r{n}")
    page = await pool_events(http, None, 1)
    (low,) = page["items"]
    assert low["type"] == "pool.low_stock"
    assert (low["data"]["pool"], low["data"]["available"], low["data"]["state"]) == (
        "default",
        2,
        "low",
    )
    (pool,) = (await http.get("/v1/coupon-sets/spring/stats")).json()["pools"]
    assert (pool["stock_state"], pool["low_stock_threshold"]) == ("low", 2)
    await assign(http, "spring", "r3")  # 1 left: still low, no new event
    await asyncio.sleep(0.5)
    later = {"types": "pool.low_stock", "after": page["next_cursor"]}
    assert (await http.get("/v1/events", params=later)).json()["items"] == []
    await assign(http, "spring", "r4")  # the last one
    page = await pool_events(http, page["next_cursor"], 1)
    assert [e["type"] for e in page["items"]] == ["pool.exhausted"]
    shown = (await http.get("/v1/coupon-sets/spring/pools/default")).json()
    assert shown["stock_state"] == "exhausted"
    assert shown["stock_state_at"] is not None
    (pool,) = (await http.get("/v1/coupon-sets/spring/stats")).json()["pools"]
    assert (pool["stock_state"], pool["stock_state_at"]) == ("exhausted", shown["stock_state_at"])

    await add_codes(http, "spring", [f"T-{n}" for n in range(10)])
    page = await pool_events(http, page["next_cursor"], 1)
    (restocked,) = page["items"]
    assert (restocked["type"], restocked["data"]["available"], restocked["data"]["state"]) == (
        "pool.restocked",
        10,
        "ok",
    )
    # Re-armed: crossing again fires again.
    for n in range(8):
        await assign(http, "spring", f"q{n}")
    page = await pool_events(http, page["next_cursor"], 1)
    assert [e["type"] for e in page["items"]] == ["pool.low_stock"]


async def test_days_of_stock_left_from_the_forecast(http: httpx.AsyncClient) -> None:
    await create_set(http, key="spring")
    await add_codes(http, "spring", [f"S-{n}" for n in range(100)])
    await http.patch("/v1/coupon-sets/spring/pools/default", json={"low_stock_days": 100})
    # The statistics' forecast: a pool created today assigns at today's pace, k a day,
    # so (100 - k) / k days are left, under 100 from the first assignment on.
    for n in range(8):
        await assign(http, "spring", f"r{n}")
    page = await pool_events(http, None, 1)
    (low,) = page["items"]
    assert low["type"] == "pool.low_stock"
    assigned = 100 - low["data"]["available"]
    assert assigned >= 1
    # Read just after the alert's stock: assignments committed in between may already
    # count in the rate (at most the 8 made), never in the stock.
    assert (100 - assigned) / 8 - 0.01 <= low["data"]["days_left"]
    assert low["data"]["days_left"] <= (100 - assigned) / assigned + 0.01
    assert low["data"]["low_stock_days"] == 100


async def test_pool_alert_settings_are_validated(http: httpx.AsyncClient) -> None:
    await create_set(http, key="spring")
    url = "/v1/coupon-sets/spring/pools/default"
    for body in (
        {"low_stock_threshold": -1},
        {"low_stock_days": 0},
        {"name": None},
        {"low_stock": 5},
    ):
        refused = await http.patch(url, json=body)
        assert refused.status_code == 422, body
        assert problem_type(refused) == "validation-error"
    both = (await http.patch(url, json={"low_stock_threshold": 5, "low_stock_days": 2.5})).json()
    assert (both["low_stock_threshold"], both["low_stock_days"]) == (5, 2.5)
    cleared = (await http.patch(url, json={"low_stock_threshold": None})).json()
    assert (cleared["low_stock_threshold"], cleared["low_stock_days"]) == (None, 2.5)
    soccer = await http.post("/v1/coupon-sets/spring/pools", json={"name": "soccer"})
    renamed = await http.patch(
        "/v1/coupon-sets/spring/pools/soccer", json={"name": "football", "low_stock_threshold": 1}
    )
    assert renamed.json()["name"] == "football"
    assert renamed.json()["low_stock_threshold"] == 1
    assert soccer.status_code == 201


async def test_a_set_warns_once_before_it_expires(http: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = await create_set(http, key="spring", valid_until=until, expiry_warning_days=2)
    assert made["expiry_warning_days"] == 2
    for _ in range(100):
        page = (await http.get("/v1/events", params={"types": "coupon_set.expiring"})).json()
        if page["items"]:
            break
        await asyncio.sleep(0.1)
    (warning,) = page["items"]
    assert (warning["data"]["set_key"], warning["data"]["expiry_warning_days"]) == ("spring", 2)
    shown = (await http.get("/v1/coupon-sets/spring")).json()
    assert shown["expiry_warned_at"] is not None
    await asyncio.sleep(1.0)
    again = (await http.get("/v1/events", params={"types": "coupon_set.expiring"})).json()
    assert len(again["items"]) == 1
