"""The lists that must stay fast on tens of millions of rows read the indexes meant for
them (docs/insight.md). A test database is tiny, so the planner is told to avoid what it
would pick for a tiny table (sequential scans, bitmaps, sorts); the question asked is
whether the statement as written lets the intended index serve it at all, in the
generic plan a prepared statement ends up with: a status bound as a parameter, say,
would leave no partial index usable there."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.code import CodeStatus
from app.models.coupon_set import CouponSet
from app.pagination import PageParams
from app.services import codes, recipients
from tests.helpers import add_codes, assign, create_set, redeem

PAGE = PageParams(limit=10, cursor=None)


async def _plans(app: FastAPI, call: Callable[[AsyncSession], Awaitable[Any]]) -> list[str]:
    """The plans of the statements ``call`` runs, each one as text."""
    captured: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    engine = app.state.engine.sync_engine
    async with app.state.sessionmaker() as session:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await session.execute(text(f"SET LOCAL {setting} = off"))
        event.listen(engine, "before_cursor_execute", grab)
        try:
            await call(session)
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        connection = await session.connection()
        # The plan a prepared statement gets once PostgreSQL plans it for any parameter
        # (the server's choice after five executions): partial indexes must still serve.
        await connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        plans = []
        for n, (statement, parameters) in enumerate(captured):
            await connection.exec_driver_sql(f"PREPARE planned_{n} AS {statement}")
            # A generic plan is the same for any values: NULLs stand for them.
            values = ", ".join(["NULL"] * len(parameters))
            execute = f"EXECUTE planned_{n}({values})" if parameters else f"EXECUTE planned_{n}"
            result = await connection.exec_driver_sql(f"EXPLAIN {execute}")
            plans.append("\n".join(result.scalars()))
            await connection.exec_driver_sql(f"DEALLOCATE planned_{n}")
        await session.rollback()
    return plans


@pytest.fixture
async def spring(client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring")
    await client.post("/v1/coupon-sets/spring/pools", json={"name": "soccer"})
    await add_codes(client, "spring", [f"SP-{n}" for n in range(20)])
    await add_codes(client, "spring", [f"SO-{n}" for n in range(20)], pool="soccer")
    code = (await assign(client, "spring", "ann")).json()["code"]
    await redeem(client, code)
    await redeem(client, "SP-9", recipient_id="ann", hold_seconds=60)
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME")
    await assign(client, "welcome", "ann")


@pytest.mark.parametrize(
    ("filters", "indexes"),
    [
        ({"status": CodeStatus.redeemed}, {"ix_codes_pool_id_status_id"}),
        ({"status": CodeStatus.available}, {"ix_codes_free"}),
        ({"pool": "soccer"}, {"ix_codes_free", "ix_codes_pool_id_status_id"}),
        ({"pool": "soccer", "status": CodeStatus.void}, {"ix_codes_pool_id_status_id"}),
        ({"recipient_id": "ann"}, {"ix_codes_recipient_id"}),
        ({"recipient_id": "ann", "status": CodeStatus.redeemed}, {"ix_codes_recipient_id"}),
    ],
)
async def test_every_filter_of_the_code_list_reads_its_index(
    app: FastAPI, spring: None, filters: dict[str, Any], indexes: set[str]
) -> None:
    async def call(session: AsyncSession) -> None:
        coupon_set = (
            await session.execute(text("SELECT id FROM coupon_sets WHERE key = 'spring'"))
        ).scalar_one()
        found = await session.get(CouponSet, coupon_set)
        assert found is not None
        arguments = {"status": None, "pool": None, "recipient_id": None} | filters
        await codes.list_codes(session, coupon_set=found, params=PAGE, **arguments)

    plan = (await _plans(app, call))[-1]
    for index in indexes:
        assert index in plan, plan
    assert "Seq Scan on codes" not in plan, plan


async def test_a_contacts_lists_read_the_recipient_indexes(app: FastAPI, spring: None) -> None:
    async def coupons(session: AsyncSession) -> None:
        await recipients.list_coupons(session, recipient_id="ann", params=PAGE)

    async def activity(session: AsyncSession) -> None:
        await recipients.list_activity(session, recipient_id="ann", params=PAGE)

    plans = "\n".join(await _plans(app, coupons) + await _plans(app, activity))
    for index in (
        "ix_codes_recipient_id",
        "ix_shared_assignments_recipient_id",
        "ix_audit_events_recipient_id",
        "ix_redemptions_recipient_holds",
    ):
        assert index in plans, plans
    for table in ("codes", "shared_assignments", "audit_events", "redemptions"):
        assert f"Seq Scan on {table}" not in plans, plans
