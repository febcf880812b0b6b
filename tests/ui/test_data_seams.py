"""The sections fed by app/ui/data.py: the real statistics and a contact's coupons, and
what each function's answer renders as (the functions are replaced here by ones
that answer, so the rendering is checked apart from the data)."""

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.services import api_keys, coupon_sets
from app.ui import charts, data
from tests.conftest import ADMIN_SECRET
from tests.helpers import add_codes, assign, create_set, redeem
from tests.ui.test_web import sign_in, ui_client


async def test_sections_show_the_statistics_and_a_contact(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["A1", "A2"])
    assigned = await client.post("/v1/coupon-sets/spring/assignments", json={"recipient_id": "c-1"})
    assert assigned.status_code == 201, assigned.text
    async with ui_client(app) as http:
        await sign_in(http)
        sets = (await http.get("/ui/sets")).text
        assert 'id="stats-note"' not in sets
        page = (await http.get("/ui/sets/spring")).text
        assert 'id="forecast-na"' not in page
        assert 'id="chart-na"' not in page
        assert 'class="chart"' in page
        contact = (await http.get("/ui/contacts?recipient_id=c-1")).text
        assert 'id="contact-na"' not in contact
        assert assigned.json()["code"] in contact


async def test_sections_render_what_their_functions_answer(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_set(client, key="spring", label="Spring")
    await add_codes(client, "spring", ["A1", "A2"])
    set_id = uuid.UUID(str(created["id"]))
    stats = data.SetStats(days_of_stock_left=2.5, low_stock=True, forecast="runs out Tuesday")
    per_day = [data.DayCount(date(2026, 11, 1) + timedelta(days=i), i, i // 2) for i in range(30)]
    now = datetime(2026, 11, 30, 9, tzinfo=UTC)

    async def set_stats(*_: object) -> data.SetStats:
        return stats

    async def set_list_stats(*_: object) -> dict[uuid.UUID, data.SetStats]:
        return {set_id: stats}

    async def timeline(*_: object, days: int, tz: str) -> list[data.DayCount]:
        assert (days, tz) == (30, "Europe/Madrid")
        return per_day

    async def recipient(*_: object) -> data.Recipient:
        held = data.HeldCoupon("spring", "Spring", "A1", "default", "assigned", now, None)
        return data.Recipient("c-1", [held], [data.ActivityEvent(now, "assign", "spring", "A1")])

    async def webhooks(*_: object) -> list[data.Webhook]:
        attempt = data.Attempt("a-1", now, "code.assigned", 500, "server error")
        return [data.Webhook(uuid.uuid4(), "https://hooks.example/x", ["*"], True, [attempt])]

    for name, function in {
        "set_stats": set_stats,
        "set_list_stats": set_list_stats,
        "timeline": timeline,
        "recipient": recipient,
        "webhooks": webhooks,
    }.items():
        monkeypatch.setattr(data, name, function)
    async with ui_client(app) as http:
        await sign_in(http)
        http.cookies.set("coupons_tz", "Europe/Madrid", path="/ui")
        sets = (await http.get("/ui/sets")).text
        assert "low stock" in sets
        assert ">2.5<" in sets
        page = (await http.get("/ui/sets/spring")).text
        assert "<strong>2.5</strong>" in page
        assert "runs out Tuesday" in page
        assert page.count('class="c-assigned"') == 30
        assert "the busiest day had 29" in page
        contact = (await http.get("/ui/contacts?recipient_id=c-1")).text
        assert "<code>A1</code>" in contact
        hooks = (await http.get("/ui/webhooks")).text
        assert "https://hooks.example/x" in hooks
        assert "server error" in hooks
        assert 'action="/ui/webhooks/attempts/a-1/retry"' in hooks
        assert 'name="threshold"' in page


def test_the_stock_bar_splits_100_by_status() -> None:
    bar = charts.stock_bar({"available": 3, "assigned": 1, "redeemed": 0, "void": 0})
    assert [(s.part, s.x, s.width) for s in bar] == [
        ("available", 0.0, 75.0),
        ("assigned", 75.0, 25.0),
    ]
    assert charts.stock_bar({}) == []


def test_the_day_chart_scales_to_the_busiest_day() -> None:
    chart = charts.day_chart(
        [data.DayCount(date(2026, 11, 1), 4, 2), data.DayCount(date(2026, 11, 2), 0, 1)]
    )
    assert chart.peak == 4
    heights = [(b.label, b.series, b.height) for b in chart.bars]
    assert heights[0] == ("2026-11-01", "assigned", 120.0)
    assert heights[1] == ("2026-11-01", "redeemed", 60.0)
    assert heights[2] == ("2026-11-02", "assigned", 0.0)


async def test_the_set_list_gives_each_set_what_its_own_page_does(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await create_set(client, key="busy")
    await add_codes(client, "busy", [f"B{n}" for n in range(20)])
    for n in range(12):
        assert (await assign(client, "busy", f"r{n}")).status_code == 201
    await create_set(client, key="idle")
    await add_codes(client, "idle", ["I1"])
    await create_set(client, key="shared", kind="shared", shared_code="ALL10", max_uses=5)
    for n in range(3):
        redeemed = await redeem(client, "ALL10", recipient_id=f"s{n}", order_id=f"o{n}")
        assert redeemed.status_code == 201, redeemed.text
    await create_set(client, key="unlimited", kind="shared", shared_code="ANY5")
    async with app.state.sessionmaker() as session:
        sets = [
            await coupon_sets.get_coupon_set(session, key)
            for key in ("busy", "idle", "shared", "unlimited")
        ]
        key = await api_keys.find_active(session, secret=ADMIN_SECRET, cache=app.state.key_cache)
        assert key is not None
        page = await data.set_list_stats(session, key, sets, await data.glances(session, sets))
        one_by_one = {s.id: await data.set_stats(session, key, s) for s in sets}
    assert page == one_by_one
    busy, idle, shared, unlimited = (page[s.id] for s in sets)
    assert busy.assigned_per_day
    assert busy.days_of_stock_left is not None
    assert idle.days_of_stock_left is None
    assert shared.assigned_per_day
    assert shared.days_of_stock_left is not None
    assert unlimited.days_of_stock_left is None
