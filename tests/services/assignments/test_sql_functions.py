"""The live definitions of the claim functions are the files in app/sql/: a migrated
database holds exactly them, and they state a free code as app/models/code.py does."""

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

import app as app_package
from app.models.code import free

SQL = Path(app_package.__file__).parent / "sql"
FUNCTIONS = ["claim_code", "claim_codes"]
_DEFINITIONS = (
    "SELECT array_agg(pg_get_functiondef(p.oid)) FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'public' AND p.proname = $1"
)


@pytest.mark.parametrize("name", FUNCTIONS)
async def test_the_migrated_database_holds_the_file(app: FastAPI, name: str) -> None:
    async with app.state.driver_pool.acquire() as connection:
        migrated = await connection.fetchval(_DEFINITIONS, name)
        # The file run over the migrated function, then undone: the database prints
        # both the same way, so any difference in signature or body shows.
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute((SQL / f"{name}.sql").read_text())
            from_file = await connection.fetchval(_DEFINITIONS, name)
        finally:
            await transaction.rollback()
    assert len(migrated) == 1
    assert from_file == migrated


def _normal(sql: str) -> str:
    """``sql`` without comments, on one line, spaced alike inside parentheses."""
    flat = " ".join(re.sub(r"--[^\n]*", " ", sql).split())
    return flat.replace("( ", "(").replace(" )", ")")


def _conjuncts(predicate: str) -> list[str]:
    """The parts of ``predicate`` joined by AND outside parentheses."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(predicate):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and predicate.startswith(" AND ", at):
            parts.append(predicate[start:at])
            start = at + len(" AND ")
    return [*parts, predicate[start:]]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_file_states_a_free_code_as_the_model_does(name: str) -> None:
    text = _normal((SQL / f"{name}.sql").read_text())
    parts = _conjuncts(_normal(free("c")))
    assert len(parts) == 2
    for part in parts:
        assert part in text, part
