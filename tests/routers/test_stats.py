"""Statistics: a set's counts, pools, activity and forecast; the set list's glance; the
timeline; the recount; the per-pool gauges. Every count is checked against COUNT(*)."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.services.stats import StatsFolder
from app.settings import Settings
from tests.conftest import make_client, running
from tests.helpers import add_codes, assign, create_set, problem_type, redeem
from tests.stats_truth import assert_exact, assert_shared_exact, truth


def _pool(app: FastAPI) -> asyncpg.Pool:
    pool: asyncpg.Pool = app.state.driver_pool
    return pool


def _folder(app: FastAPI) -> StatsFolder:
    folder: StatsFolder = app.state.stats_folder
    return folder


@pytest.fixture
async def spring(client: httpx.AsyncClient) -> None:
    """A unique set: 10 codes in `default`, 5 in `vip`."""
    await create_set(client, key="spring")
    await client.post("/v1/coupon-sets/spring/pools", json={"name": "vip"})
    await add_codes(client, "spring", [f"S-{n:02d}" for n in range(10)])
    await add_codes(client, "spring", [f"V-{n:02d}" for n in range(5)], pool="vip")


async def test_stats_of_a_unique_set_add_up_and_match_the_rows(
    client: httpx.AsyncClient, app: FastAPI, spring: None
) -> None:
    codes = [(await assign(client, "spring", f"r{n}")).json()["code"] for n in range(4)]
    vip = (await assign(client, "spring", "v1", pool="vip")).json()["code"]
    assert (await redeem(client, codes[0])).status_code == 201
    assert (await redeem(client, vip)).status_code == 201
    held = await redeem(client, codes[1], hold_seconds=3600)
    assert held.status_code == 201, held.text
    assert (await client.post(f"/v1/coupon-sets/spring/codes/{codes[3]}/void")).status_code == 200
    rolled = await redeem(client, codes[2])
    rollback = await client.post(f"/v1/redemptions/{rolled.json()['id']}/rollback")
    assert rollback.status_code == 200, rollback.text

    response = await client.get("/v1/coupon-sets/spring/stats")
    assert response.status_code == 200, response.text
    stats = response.json()
    assert (stats["kind"], stats["shared"]) == ("unique", None)
    assert stats["codes"] == {
        "total": 15,
        "available": 10,
        "assigned": 2,
        "redeemed": 2,
        "void": 1,
        "sent": 0,
        "held": 1,
    }
    assert [p["name"] for p in stats["pools"]] == ["default", "vip"]
    assert stats["activity"] == {
        "assigned_last_24h": 5,
        "redeemed_last_24h": 3,
        "assigned_last_7d": 5,
        "redeemed_last_7d": 3,
        "redemption_rate": 0.5,
    }
    forecast = stats["forecast"]
    assert forecast["basis"] == "ewma_daily_14d_half_life_3d"
    # A set created today: its one day holds every weight.
    assert forecast["assign_rate_per_day"] == 5
    assert forecast["days_of_stock_left"] == 2
    await assert_exact(client, _pool(app), "spring")
    # Folded or not, the same counts.
    assert await _folder(app).fold() > 0
    await assert_exact(client, _pool(app), "spring")
    assert (await client.get("/v1/coupon-sets/spring/stats")).json()["activity"] == stats[
        "activity"
    ]


async def test_a_delivery_counts_as_sent_after_its_messages_are_read_and_failures_leave(
    client: httpx.AsyncClient, app: FastAPI, spring: None
) -> None:
    delivery = (
        await client.post(
            "/v1/deliveries",
            json={"label": "mail", "coupon_set_id": "spring", "template": "{{ coupon.code }}"},
        )
    ).json()
    targets = [{"recipient_id": f"t{n}"} for n in range(4)]
    await client.post(f"/v1/deliveries/{delivery['id']}/recipients", json={"recipients": targets})
    assert (await client.post(f"/v1/deliveries/{delivery['id']}/confirm")).status_code == 200
    stats = (await client.get("/v1/coupon-sets/spring/stats")).json()
    assert (stats["codes"]["assigned"], stats["codes"]["sent"]) == (4, 0)

    assert (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["sent_at"] is None
    assert (await client.get(f"/v1/deliveries/{delivery['id']}/messages")).status_code == 200
    sent_at = (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["sent_at"]
    assert sent_at is not None
    await client.get(f"/v1/deliveries/{delivery['id']}/messages?format=jsonl")
    assert (await client.get(f"/v1/deliveries/{delivery['id']}")).json()["sent_at"] == sent_at
    await assert_exact(client, _pool(app), "spring")
    assert (await client.get("/v1/coupon-sets/spring/stats")).json()["codes"]["sent"] == 4
    failed = await client.post(
        f"/v1/deliveries/{delivery['id']}/failures", json={"recipient_ids": ["t0"]}
    )
    assert failed.json()["returned"] == 1
    assert (await client.get("/v1/coupon-sets/spring/stats")).json()["codes"]["sent"] == 3
    await _folder(app).fold()
    await assert_exact(client, _pool(app), "spring")


async def test_stats_of_a_shared_set(client: httpx.AsyncClient, app: FastAPI) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=10)
    for n in range(3):
        assert (await assign(client, "welcome", f"r{n}")).status_code in (200, 201)
    assert (await redeem(client, "WELCOME")).status_code == 201
    assert (await redeem(client, "WELCOME", hold_seconds=3600)).status_code == 201
    short = await redeem(client, "WELCOME", hold_seconds=1)
    assert short.status_code == 201
    await asyncio.sleep(1.1)  # that hold expires, not given back yet
    stats = (await client.get("/v1/coupon-sets/welcome/stats")).json()
    assert (stats["codes"], stats["pools"]) == (None, [])
    assert stats["shared"] == {"uses": 2, "remaining_uses": 8, "recipients": 3, "held": 1}
    assert stats["activity"]["assigned_last_24h"] == 3
    assert stats["activity"]["redeemed_last_24h"] == 1
    await assert_shared_exact(client, _pool(app), "welcome")
    await _folder(app).fold()
    await assert_shared_exact(client, _pool(app), "welcome")


async def test_the_set_list_carries_each_sets_glance(
    client: httpx.AsyncClient, app: FastAPI, spring: None
) -> None:
    await assign(client, "spring", "r1")
    await create_set(client, key="open", kind="shared", shared_code="OPEN")
    page = (await client.get("/v1/coupon-sets")).json()
    glances = {s["key"]: s["stats"] for s in page["items"]}
    assert glances["spring"] == {
        "total": 15,
        "available": 14,
        "assigned": 1,
        "sent": 0,
        "redeemed": 0,
    }
    assert glances["open"] == {
        "total": None,
        "available": None,
        "assigned": 0,
        "sent": None,
        "redeemed": 0,
    }
    await assert_exact(client, _pool(app), "spring")


async def test_timeline_counts_per_bucket_in_a_time_zone(
    client: httpx.AsyncClient, app: FastAPI, spring: None
) -> None:
    for n in range(3):
        await assign(client, "spring", f"r{n}")
    await assign(client, "spring", "v", pool="vip")
    now = datetime.now(UTC)
    params = {
        "metric": "assigned",
        "bucket": "hour",
        "from": (now - timedelta(hours=5)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
        "tz": "Asia/Kolkata",
    }
    hourly = (await client.get("/v1/coupon-sets/spring/stats/timeline", params=params)).json()
    assert (hourly["metric"], hourly["bucket"], hourly["tz"]) == (
        "assigned",
        "hour",
        "Asia/Kolkata",
    )
    assert len(hourly["points"]) in (6, 7)
    assert sum(p["count"] for p in hourly["points"]) == 4
    assert all(p["start"].endswith(":00:00+05:30") for p in hourly["points"])
    vip = (
        await client.get("/v1/coupon-sets/spring/stats/timeline", params={**params, "pool": "vip"})
    ).json()
    assert sum(p["count"] for p in vip["points"]) == 1

    daily = (
        await client.get(
            "/v1/coupon-sets/spring/stats/timeline",
            params={"metric": "imported", "tz": "Asia/Kathmandu"},
        )
    ).json()
    assert len(daily["points"]) in (30, 31)
    assert daily["points"][-1]["count"] + daily["points"][-2]["count"] == 15
    assert all(p["start"].endswith("T00:00:00+05:45") for p in daily["points"])
    assert sum(p["count"] for p in daily["points"]) == 15
    await _folder(app).fold()
    again = (
        await client.get(
            "/v1/coupon-sets/spring/stats/timeline",
            params={"metric": "imported", "tz": "Asia/Kathmandu"},
        )
    ).json()
    assert sum(p["count"] for p in again["points"]) == 15


async def test_a_day_with_a_clock_change_is_one_bucket(
    client: httpx.AsyncClient, spring: None
) -> None:
    params = {
        "bucket": "day",
        "from": "2026-10-24T12:00:00Z",
        "to": "2026-10-26T23:00:00Z",
        "tz": "Europe/Madrid",
    }
    days = (await client.get("/v1/coupon-sets/spring/stats/timeline", params=params)).json()
    assert [p["start"] for p in days["points"]] == [
        "2026-10-24T00:00:00+02:00",
        "2026-10-25T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
    ]
    assert [p["count"] for p in days["points"]] == [0, 0, 0]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"tz": "Mars/Olympus"}, "IANA"),
        ({"tz": "+05:30"}, "IANA"),
        ({"bucket": "hour", "from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "1000"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "after"),
        ({"to": "0001-01-05T00:00:00Z"}, "too early"),
        ({"tz": "localtime"}, "IANA"),
    ],
)
async def test_bad_timelines_are_refused(
    client: httpx.AsyncClient, spring: None, params: dict[str, str], detail: str
) -> None:
    response = await client.get("/v1/coupon-sets/spring/stats/timeline", params=params)
    assert response.status_code == 422, response.text
    assert problem_type(response) == "invalid-timeline"
    assert detail in response.json()["detail"].replace(",", "")


async def test_timeline_refuses_an_unknown_metric_or_pool(
    client: httpx.AsyncClient, spring: None
) -> None:
    metric = await client.get("/v1/coupon-sets/spring/stats/timeline?metric=clicks")
    assert metric.status_code == 422
    pool = await client.get("/v1/coupon-sets/spring/stats/timeline?pool=nope")
    assert pool.status_code == 404


async def test_recount_finds_and_repairs_drift(
    client: httpx.AsyncClient, app: FastAPI, spring: None
) -> None:
    await assign(client, "spring", "r1")
    await _folder(app).fold()
    clean = await client.post("/v1/stats/recount")
    assert clean.status_code == 200, clean.text
    assert clean.json() == {"drift": [], "delivered_drift": 0, "repaired": 0}
    # Corrupt the counters as a bug would, with deltas still unfolded on top.
    await _pool(app).execute(
        "UPDATE pool_stock SET available = available + 3, assigned = assigned - 1 "
        "WHERE pool_id = (SELECT id FROM pools WHERE name = 'default')"
    )
    await assign(client, "spring", "r2")
    wrong = (await client.get("/v1/coupon-sets/spring/stats")).json()["codes"]
    assert wrong["available"] != (await truth(_pool(app), "spring"))["codes"]["available"]

    report = (await client.post("/v1/stats/recount", params={"set": "spring"})).json()
    assert report == {
        "drift": [
            {
                "set_key": "spring",
                "pool": "default",
                "available": -3,
                "assigned": 1,
                "redeemed": 0,
                "void": 0,
            }
        ],
        "delivered_drift": 0,
        "repaired": 4,
    }
    await assert_exact(client, _pool(app), "spring")
    await _folder(app).fold()
    await assert_exact(client, _pool(app), "spring")
    # A recount of everything sets the drift gauge (0 now: repaired).
    await _pool(app).execute(
        "UPDATE pool_stock SET void = void + 2 "
        "WHERE pool_id = (SELECT id FROM pools WHERE name = 'vip')"
    )
    report = (await client.post("/v1/stats/recount")).json()
    assert report["repaired"] == 2
    metrics = (await client.get("/metrics")).text
    assert 'coupons_stats_drift{status="void"} 2.0' in metrics
    assert "coupons_stats_drift_repaired_total 6.0" in metrics


async def test_recount_needs_an_admin_key(client: httpx.AsyncClient) -> None:
    key = (await client.post("/v1/api-keys", json={"name": "reader", "scopes": ["read"]})).json()[
        "secret"
    ]
    response = await client.post("/v1/stats/recount", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403


async def test_metrics_export_codes_per_pool(client: httpx.AsyncClient, spring: None) -> None:
    await assign(client, "spring", "r1")
    metrics = (await client.get("/metrics")).text
    assert 'coupons_pool_codes{pool="default",set_key="spring",status="available"} 9.0' in metrics
    assert 'coupons_pool_codes{pool="vip",set_key="spring",status="available"} 5.0' in metrics
    assert 'coupons_pool_codes{pool="default",set_key="spring",status="assigned"} 1.0' in metrics


async def test_metrics_pool_limit_cuts_and_says_so(
    app: FastAPI, settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running(settings, database_url, metrics_max_pools=1) as limited,
        make_client(limited) as client,
    ):
        await create_set(client, key="spring")
        await client.post("/v1/coupon-sets/spring/pools", json={"name": "vip"})
        with caplog.at_level(logging.WARNING):
            metrics = (await client.get("/metrics")).text
        await client.get("/metrics")
    assert metrics.count("coupons_pool_codes{") == 4
    cuts = [r for r in caplog.records if "exporting 1 of 2 pools" in r.getMessage()]
    assert len(cuts) == 1
