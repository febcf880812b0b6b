"""The hot paths touch one coupon set per statement (docs/scaling.md: what lets a set be
the unit of distribution, as Citus's distribution column).

Proven at run time, not by reading the SQL: every set-scoped table gets a row-level
security policy whose check RAISES for a row of any set but the one under test, and the
hot paths run, through the app, as a role the policies apply to. A statement that reads,
locks, updates or inserts a single row of another set (a scan without its set's
predicate, a join that wanders, a count over every set) fails the request, and the
test with it. That role gets the plans of a large database: sequential and bitmap
scans, hash and merge joins and materialisation are off (on tables this small they would
read every row, whatever the predicate); an index probe reads only the rows its
condition finds. Other sets hold codes, assignments, redemptions, uses and a delivery,
so there is something to trip over.

Run: the assignment (lean path, claim_codes), a repeat, validation and redemption of
unique and shared codes (lean path, the redemption engine), holds confirmed, released
and rolled back (settle_redemption), and a delivery's confirm (its batches)."""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.settings import Settings
from tests.conftest import _libpq, make_client, running
from tests.helpers import add_codes, assign, create_set, redeem
from tests.routers.test_deliveries import add_targets, create_delivery, targets

# The tables distributed by set in docs/scaling.md: table -> the column naming its set
# (delivery_recipients: its delivery, which is of one set). coupon_sets and pools are
# reference tables there (small, read by key or by shared code, copied to every node),
# so reading them by key is not crossing sets.
SET_COLUMNS = {
    "codes": "set_id",
    "redemptions": "set_id",
    "set_usage": "set_id",
    "shared_assignments": "set_id",
    "audit_events": "set_id",
    "import_jobs": "set_id",
    "deliveries": "coupon_set_id",
}

PROBE_FUNCTIONS = """
CREATE TABLE set_probe (set_id uuid, delivery_id uuid);
INSERT INTO set_probe VALUES (NULL, NULL);
CREATE FUNCTION set_probe_row(p_table text, p_set uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE v_set uuid := (SELECT set_id FROM set_probe);
BEGIN
    IF v_set IS NOT NULL AND p_set IS DISTINCT FROM v_set THEN
        RAISE EXCEPTION 'a statement touched % of set %, not of set %', p_table, p_set, v_set;
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION set_probe_delivery(p_delivery uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE v_delivery uuid := (SELECT delivery_id FROM set_probe);
BEGIN
    IF v_delivery IS NOT NULL AND p_delivery IS DISTINCT FROM v_delivery THEN
        RAISE EXCEPTION 'a statement touched delivery_recipients of delivery %', p_delivery;
    END IF;
    RETURN true;
END $$;
"""


@asynccontextmanager
async def probed(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A role the policies apply to (its URL), and the owner's connection that sets which
    set may be touched; everything is removed afterwards."""
    role = f"coupons_probe_{secrets.token_hex(4)}"
    owner = await asyncpg.connect(_libpq(database_url))
    database = make_url(database_url).database
    try:
        await owner.execute(PROBE_FUNCTIONS)
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        # The plans of a large database: index probes, no sequential scans, and no hash
        # or merge joins (which read a whole side of the join).
        for plan in ("seqscan", "bitmapscan", "hashjoin", "mergejoin", "material"):
            await owner.execute(f"ALTER ROLE {role} SET enable_{plan} = off")
        for statement in (
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
            f"GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO {role}",
            f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        ):
            await owner.execute(statement)
        for table, column in SET_COLUMNS.items():
            check = f"set_probe_row('{table}', {column})"
            await owner.execute(
                f"CREATE POLICY one_set ON {table} USING ({check}) WITH CHECK ({check})"
            )
        await owner.execute(
            "CREATE POLICY one_set ON delivery_recipients USING (set_probe_delivery(delivery_id)) "
            "WITH CHECK (set_probe_delivery(delivery_id))"
        )
        url = make_url(database_url).set(username=role, password=None)
        yield owner, url.render_as_string(hide_password=False)
    finally:
        for table in [*SET_COLUMNS, "delivery_recipients"]:
            await owner.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
            await owner.execute(f"DROP POLICY IF EXISTS one_set ON {table}")
        await owner.execute("DROP TABLE IF EXISTS set_probe")
        await owner.execute("DROP FUNCTION IF EXISTS set_probe_row, set_probe_delivery")
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


async def enforce(owner: asyncpg.Connection, set_id: object, delivery_id: object = None) -> None:
    await owner.execute("UPDATE set_probe SET set_id = $1, delivery_id = $2", set_id, delivery_id)
    for table in [*SET_COLUMNS, "delivery_recipients"]:
        await owner.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


async def relax(owner: asyncpg.Connection) -> None:
    await owner.execute("UPDATE set_probe SET set_id = NULL, delivery_id = NULL")


async def other_sets(client: httpx.AsyncClient) -> None:
    """Sets that the hot paths under test must not touch, with something in each."""
    await create_set(client, key="other-unique")
    await add_codes(client, "other-unique", [f"OTHER-{n}" for n in range(20)])
    code = (await assign(client, "other-unique", "ann")).json()["code"]
    assert (await redeem(client, code)).status_code == 201
    await create_set(client, key="other-shared", kind="shared", shared_code="OTHERS", max_uses=9)
    assert (await redeem(client, "OTHERS", hold_seconds=600)).status_code == 201
    await create_delivery(client, coupon_set_id="other-unique")


async def test_the_hot_paths_touch_one_set_per_statement(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    await other_sets(client)
    unique = await create_set(client, key="probe-unique")
    await add_codes(client, "probe-unique", [f"PROBE-{n}" for n in range(40)])
    shared = await create_set(
        client, key="probe-shared", kind="shared", shared_code="PROBES", max_uses=20
    )
    delivery = await create_delivery(client, coupon_set_id="probe-unique")
    await add_targets(client, delivery["id"], targets(12, start=100))
    assert (await client.post(f"/v1/deliveries/{delivery['id']}/analyze")).status_code == 200

    async with (
        probed(database_url) as (owner, probe_url),
        running(settings, probe_url) as probe,
        make_client(probe) as hot,
    ):
        await enforce(owner, uuid.UUID(str(unique["id"])), uuid.UUID(delivery["id"]))
        first = await assign(hot, "probe-unique", "bob")
        assert first.status_code == 201, first.text
        assert (await assign(hot, "probe-unique", "bob")).status_code == 200
        for n in range(5):
            assert (await assign(hot, "probe-unique", f"r{n}")).status_code == 201
        code = first.json()["code"]
        checked = await hot.post("/v1/redemptions/validate", json={"code": code})
        assert checked.status_code == 200, checked.text
        held = await redeem(hot, code, hold_seconds=600)
        assert held.status_code == 201, held.text
        confirmed = await hot.post(f"/v1/redemptions/{held.json()['id']}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        other = (await assign(hot, "probe-unique", "r0")).json()["code"]
        taken = await redeem(hot, other, order_id="o-1")
        assert taken.status_code == 201, taken.text
        rolled = await hot.post(f"/v1/redemptions/{taken.json()['id']}/rollback")
        assert rolled.status_code == 200, rolled.text
        sent = await hot.post(f"/v1/deliveries/{delivery['id']}/confirm")
        assert sent.status_code in (200, 202), sent.text
        for _ in range(600):  # a busy machine: the confirm may outlast its wait
            sent = await hot.get(f"/v1/deliveries/{delivery['id']}")
            if sent.json()["status"] != "sending":
                break
            await asyncio.sleep(0.1)
        assert sent.json()["status"] == "finished", sent.text

        await enforce(owner, uuid.UUID(str(shared["id"])))
        checked = await hot.post("/v1/redemptions/validate", json={"code": "probes"})
        assert checked.status_code == 200, checked.text
        for action in ("confirm", "release", "rollback"):
            held = await redeem(hot, "PROBES", hold_seconds=600)
            assert held.status_code == 201, held.text
            settled = await hot.post(f"/v1/redemptions/{held.json()['id']}/{action}")
            assert settled.status_code in (200, 409), settled.text
        assert (await redeem(hot, "PROBES", order_id="o-2")).status_code == 201

        # The probe itself works: a request that reads another set fails.
        await enforce(owner, uuid.UUID(str(unique["id"])))
        refused = await hot.get("/v1/coupon-sets/other-unique/codes")
        assert refused.status_code == 500
        await relax(owner)
