"""The statistics' trigger functions are the files in app/sql/stats_*.sql: a migrated
database holds exactly them, and each fires once per statement on its table."""

from pathlib import Path

import pytest
from fastapi import FastAPI

import app as app_package

SQL = Path(app_package.__file__).parent / "sql"
FUNCTIONS = sorted(p.stem for p in SQL.glob("stats_*.sql"))
_DEFINITION = (
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'public' AND p.proname = $1"
)
_TRIGGERS = """
SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname LIKE 'stats\\_%' ORDER BY 1, 2
"""


@pytest.mark.parametrize("name", FUNCTIONS)
async def test_the_migrated_function_is_the_file(app: FastAPI, name: str) -> None:
    async with app.state.driver_pool.acquire() as connection:
        migrated = await connection.fetchval(_DEFINITION, name)
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute((SQL / f"{name}.sql").read_text())
            from_file = await connection.fetchval(_DEFINITION, name)
        finally:
            await transaction.rollback()
    assert from_file == migrated


async def test_every_table_that_changes_a_count_has_its_statement_triggers(app: FastAPI) -> None:
    rows = await app.state.driver_pool.fetch(_TRIGGERS)
    assert [tuple(r) for r in rows] == [
        ("codes", "stats_codes_changed_delete"),
        ("codes", "stats_codes_changed_insert"),
        ("codes", "stats_codes_changed_update"),
        ("redemptions", "stats_redemptions_changed_insert"),
        ("redemptions", "stats_redemptions_changed_update"),
        ("shared_assignments", "stats_shared_assignments_changed_delete"),
        ("shared_assignments", "stats_shared_assignments_changed_insert"),
    ]
