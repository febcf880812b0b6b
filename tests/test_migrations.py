"""The migrations build exactly the schema the models describe, and step back cleanly."""

import asyncio

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrations import downgrade, head_revisions, upgrade
from app.models import Base
from tests.conftest import scratch_database


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_the_models_and_downgrade_removes_everything(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(url)
        try:
            await asyncio.to_thread(upgrade, url)
            async with engine.connect() as connection:
                assert await connection.run_sync(_diff) == []
                assert {"api_keys", "coupon_sets", "pools"} <= await connection.run_sync(_tables)

            await asyncio.to_thread(downgrade, url, "base")
            async with engine.connect() as connection:
                assert await connection.run_sync(_tables) == {"alembic_version"}

            await asyncio.to_thread(upgrade, url)
            async with engine.connect() as connection:
                assert await connection.run_sync(_diff) == []
        finally:
            await engine.dispose()


def test_there_is_one_head() -> None:
    assert len(head_revisions()) == 1


_CODES_0008 = [
    # code, old lookup (0008's form), status
    ("KIT", "KIT", "available"),
    ("\uff2b\uff29\uff34", "\uff2b\uff29\uff34", "assigned"),  # fullwidth: the same as KIT now
    ("K\u200bIT", "K\u200bIT", "available"),  # zero width: the same as KIT now
    ("\u00c91", "\u00c91", "available"),
    ("E\u03011", "E\u03011", "available"),  # the same as É1 now
    ("\u200b\u200b", "\u200b\u200b", "available"),  # nothing visible
    ("spring-ab12", "SPRINGAB12", "available"),
]


async def test_0011_recomputes_lookups_and_marks_codes_it_makes_the_same(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        await asyncio.to_thread(upgrade, url, "0008")
        db = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            loose = await db.fetchval(
                "INSERT INTO coupon_sets (id, key, label, kind, status) "
                "VALUES (gen_random_uuid(), 'loose', 'loose', 'unique', 'active') RETURNING id"
            )
            exact = await db.fetchval(
                "INSERT INTO coupon_sets (id, key, label, kind, status, match_mode) VALUES "
                "(gen_random_uuid(), 'exact', 'exact', 'unique', 'active', 'exact') RETURNING id"
            )
            shared = await db.fetchval(
                "INSERT INTO coupon_sets (id, key, label, kind, status, shared_code, shared_lookup,"
                " max_uses) VALUES (gen_random_uuid(), 'shared', 'shared', 'shared', 'active',"
                " 'Wel-Come', 'WELCOME', 5) RETURNING id"
            )
            for set_id in (loose, exact):
                pool = await db.fetchval(
                    "INSERT INTO pools (id, set_id, name) "
                    "VALUES (gen_random_uuid(), $1, 'default') RETURNING id",
                    set_id,
                )
                for code, lookup, status in _CODES_0008:
                    await db.execute(
                        "INSERT INTO codes (set_id, pool_id, code, lookup, status, recipient_id) "
                        "VALUES ($1, $2, $3, $4, $5, $6)",
                        set_id,
                        pool,
                        code,
                        lookup if set_id == loose else code,
                        status,
                        "r1" if status == "assigned" else None,
                    )
            await asyncio.to_thread(upgrade, url)

            rows = await db.fetch(
                "SELECT id, code, lookup, status FROM codes WHERE set_id = $1 ORDER BY id", loose
            )
            after = {r["code"]: (r["lookup"], r["status"]) for r in rows}
            mark = {r["code"]: f" #{r['id']}" for r in rows}
            # The assigned fullwidth KIT keeps "kit"; the others with that form are marked
            # (unmatchable) and, being available, voided.
            assert after["\uff2b\uff29\uff34"] == ("kit", "assigned")
            assert after["KIT"] == ("kit" + mark["KIT"], "void")
            assert after["K\u200bIT"] == ("kit" + mark["K\u200bIT"], "void")
            assert after["\u00c91"] == ("\u00e91", "available")  # the oldest keeps the form
            assert after["E\u03011"] == ("\u00e91" + mark["E\u03011"], "void")
            assert after["\u200b\u200b"] == (mark["\u200b\u200b"], "void")
            assert after["spring-ab12"] == ("springab12", "available")
            voids = await db.fetchval(
                "SELECT count(*) FROM audit_events WHERE action = 'void' AND set_id = $1", loose
            )
            assert voids == 4
            # Exact sets keep the code as given.
            kept = await db.fetch("SELECT code, lookup FROM codes WHERE set_id = $1", exact)
            assert all(r["code"] == r["lookup"] for r in kept)
            assert len(kept) == len(_CODES_0008)
            shared_lookup = await db.fetchval(
                "SELECT shared_lookup FROM coupon_sets WHERE id = $1", shared
            )
            assert shared_lookup == "welcome"

            await asyncio.to_thread(downgrade, url, "0008")
            assert (
                await db.fetchval(
                    "SELECT lookup FROM codes WHERE set_id = $1 AND code = 'spring-ab12'", loose
                )
                == "SPRINGAB12"
            )
        finally:
            await db.close()
