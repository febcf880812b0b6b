"""The engine's statements on the database: a batch applies its requests in order under
its locks, never waits for a second lock, and keeps every shared set's counter equal to
its uses that count (redeemed + held), through rollbacks, releases and expired holds."""

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.schemas.redemption import RedemptionRequest
from app.services.redemptions.engine import BUSY, RedemptionEngine, redeem_on, validate_on
from app.services.redemptions.service import to_attempt, to_check
from tests.helpers import add_codes, create_set

COUNTER = "SELECT u.uses FROM set_usage u JOIN coupon_sets s ON s.id = u.set_id WHERE s.key = $1"
# What the counter must equal at every commit: the set's redemptions that count or that
# are held and not yet given back (an expired hold counts until the next write).
STORED_USES = """
    SELECT count(*) FROM redemptions r JOIN coupon_sets s ON s.id = r.set_id
    WHERE s.key = $1 AND r.status IN ('redeemed', 'held')
"""


def attempt(code: str, **fields: Any) -> Any:
    return to_attempt(RedemptionRequest(code=code, **fields), api_key_id=None, idempotency_key=None)


def check(code: str, **fields: Any) -> Any:
    return to_check(RedemptionRequest(code=code, **fields))


async def counter(pool: asyncpg.Pool, key: str) -> int:
    """The set's counter, after checking it against its redemptions."""
    async with pool.acquire() as connection:
        uses = await connection.fetchval(COUNTER, key)
        assert uses == await connection.fetchval(STORED_USES, key)
    return int(uses)


@pytest.fixture
def pool(app: FastAPI) -> asyncpg.Pool:
    return app.state.driver_pool


@pytest.fixture
def engine(app: FastAPI) -> RedemptionEngine:
    return app.state.redemptions  # type: ignore[no-any-return]


async def test_a_batch_applies_its_requests_in_order(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["U-1", "U-2"])
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=2)
    batch = [attempt(c) for c in ("u-1", "U-1", "welcome", "WELCOME", "WELCOME", "NOPE", "U-2")]
    async with pool.acquire() as connection:
        rows = await redeem_on(connection, batch)
    assert [(r["refusal"], r["code"]) for r in rows] == [
        (None, "U-1"),
        ("already-redeemed", "U-1"),
        (None, "WELCOME"),
        (None, "WELCOME"),
        ("max-uses", "WELCOME"),
        ("unknown-code", None),
        (None, "U-2"),
    ]
    assert rows[4]["used"] == 2
    assert await counter(pool, "welcome") == 2
    async with pool.acquire() as connection:
        audited = await connection.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'redeem'"
        )
    assert audited == 4


async def test_a_target_held_by_another_transaction_is_busy_not_waited_for(
    client: httpx.AsyncClient, pool: asyncpg.Pool, engine: RedemptionEngine
) -> None:
    await create_set(client, key="spring")
    await add_codes(client, "spring", ["U-1", "U-2", "U-3"])
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME")
    await create_set(client, key="other", kind="shared", shared_code="OTHER")
    await engine.redeem(attempt("OTHER"))  # its counter exists now
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM codes WHERE code = 'U-2' FOR UPDATE")
        await holder.execute(
            "SELECT 1 FROM set_usage u JOIN coupon_sets s ON s.id = u.set_id "
            "WHERE s.key = 'other' FOR UPDATE"
        )
        async with pool.acquire() as connection:
            # WELCOME is what most requests want: waited for (free); the rest skipped.
            rows = await redeem_on(
                connection, [attempt(c) for c in ("WELCOME", "U-2", "WELCOME", "OTHER", "U-1")]
            )
        assert [r["refusal"] for r in rows] == [None, BUSY, None, BUSY, None]
        # Alone, a request waits for its lock: here, until the holder ends; the others
        # go on meanwhile (its batch gave up waiting after BATCH_LOCK_WAIT_MS).
        late = asyncio.create_task(engine.redeem(attempt("U-2")))
        await asyncio.sleep(0.1)
        assert (await engine.redeem(attempt("U-3")))["refusal"] is None
        assert not late.done()
    assert (await late)["refusal"] is None
    assert await counter(pool, "welcome") == 2
    assert await counter(pool, "other") == 1


async def test_expired_holds_are_given_back_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, engine: RedemptionEngine
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=2)
    holds = [await engine.redeem(attempt("WELCOME", hold_seconds=600)) for _ in range(2)]
    assert (await engine.redeem(attempt("WELCOME")))["refusal"] == "max-uses"
    async with pool.acquire() as connection:
        await connection.execute(
            "UPDATE redemptions SET hold_expires_at = now() - interval '1 second' "
            "WHERE status = 'held'"
        )
        # Not given back yet (nothing wrote since), but no longer counted by validate.
        assert (await validate_on(connection, [check("WELCOME")]))[0]["remaining"] == 2
    assert await counter(pool, "welcome") == 2
    assert (await engine.redeem(attempt("WELCOME")))["refusal"] is None
    assert await counter(pool, "welcome") == 1
    async with pool.acquire() as connection:
        statuses = await connection.fetch("SELECT status FROM redemptions ORDER BY created_at")
    assert sorted(r["status"] for r in statuses) == ["expired", "expired", "redeemed"]
    released = await engine.settle(holds[0]["id"], "release", None, None)
    assert (released["refusal"], released["status"]) == (None, "released")
    assert await counter(pool, "welcome") == 1, "an expired hold is not given back twice"
    assert (await engine.settle(holds[1]["id"], "confirm", None, None))["refusal"] == (
        "hold-expired"
    )
    assert (await engine.settle(holds[1]["id"], "rollback", None, None))["state"] == "held"
    assert (await engine.redeem(attempt("WELCOME")))["refusal"] is None
    assert (await engine.redeem(attempt("WELCOME")))["refusal"] == "max-uses"
    assert await counter(pool, "welcome") == 2


async def test_rollbacks_and_releases_give_back_exactly_one_use(
    client: httpx.AsyncClient, pool: asyncpg.Pool, engine: RedemptionEngine
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=3)
    used = await engine.redeem(attempt("WELCOME"))
    held = await engine.redeem(attempt("WELCOME", hold_seconds=600))
    confirmed = await engine.redeem(attempt("WELCOME", hold_seconds=600))
    assert await counter(pool, "welcome") == 3
    assert (await engine.settle(confirmed["id"], "confirm", None, None))["status"] == "redeemed"
    assert await counter(pool, "welcome") == 3
    results = await asyncio.gather(
        *(engine.settle(used["id"], "rollback", None, None) for _ in range(3)),
        *(engine.settle(held["id"], "release", None, None) for _ in range(3)),
    )
    assert sorted(str(r["refusal"]) for r in results) == ["None"] * 2 + ["invalid-state"] * 4
    assert await counter(pool, "welcome") == 1
    async with pool.acquire() as connection:
        assert (await validate_on(connection, [check("WELCOME")]))[0]["remaining"] == 2


async def test_one_failing_request_fails_alone(
    client: httpx.AsyncClient, pool: asyncpg.Pool, engine: RedemptionEngine
) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME")
    results = await asyncio.gather(
        *(engine.redeem(attempt("WELCOME", recipient_id=f"r{n}")) for n in range(4)),
        # Past the API's checks (it refuses NUL): text PostgreSQL cannot store.
        engine.redeem(attempt("WELCOME")._replace(recipient_id="bad\x00")),
        return_exceptions=True,
    )
    assert [r["refusal"] for r in results[:4]] == [None] * 4  # type: ignore[index]
    assert isinstance(results[4], asyncpg.PostgresError)
    assert await counter(pool, "welcome") == 4


async def test_concurrent_batches_keep_a_limit_exact(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Engines of several processes, each batching: the limit holds across them."""
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=25)
    engines = [RedemptionEngine(pool) for _ in range(3)]
    results = await asyncio.gather(
        *(engines[n % 3].redeem(attempt("WELCOME", order_id=str(n))) for n in range(90))
    )
    assert sorted(str(r["refusal"]) for r in results) == ["None"] * 25 + ["max-uses"] * 65
    assert await counter(pool, "welcome") == 25
    ids = {r["id"] for r in results if r["refusal"] is None}
    assert len(ids) == 25
