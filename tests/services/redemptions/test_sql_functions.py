"""The migrated database runs the functions that app/sql/ defines: each file, created
in a scratch schema, reads back (pg_get_functiondef) exactly as the migrated function.
A file changed without a migration, or a migration that froze another text, fails."""

import re
from pathlib import Path

import asyncpg
import pytest

from app.services.redemptions.engine.sql import FUNCTIONS
from tests.conftest import _libpq

SQL = Path(__file__).resolve().parents[3] / "app" / "sql"
_NAME = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\(")
_DEFINITION = """
    SELECT pg_get_functiondef(p.oid) FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = $1 AND p.proname = $2
"""


async def _definition(connection: asyncpg.Connection, schema: str, name: str) -> str:
    found = await connection.fetch(_DEFINITION, schema, name)
    assert len(found) == 1, f"{schema}.{name}: {len(found)} functions"
    # The one difference allowed: the schema the function is in.
    return str(found[0][0]).replace(f"FUNCTION {schema}.{name}(", f"FUNCTION {name}(", 1)


@pytest.mark.parametrize("name", FUNCTIONS)
async def test_the_migrated_function_is_the_file(database_url: str, name: str) -> None:
    text = (SQL / f"{name}.sql").read_text()
    assert _NAME.findall(text) == [name], "one function per file, named as the file"
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        async with connection.transaction():
            await connection.execute("CREATE SCHEMA sql_file_check")
            # Both read back with one search_path, which decides how types are named.
            await connection.execute("SET LOCAL search_path = sql_file_check, public")
            await connection.execute(text)
            from_file = await _definition(connection, "sql_file_check", name)
            migrated = await _definition(connection, "public", name)
            raise _Undo
    except _Undo:
        pass
    finally:
        await connection.close()
    assert from_file == migrated, f"app/sql/{name}.sql differs from the migrated function"


class _Undo(Exception):
    """Rolls the scratch schema back."""
