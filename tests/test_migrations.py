"""The migrations build exactly the schema the models describe, and step back cleanly."""

import asyncio

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
