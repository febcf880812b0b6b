"""The migration froze exactly what app/sql/event_triggers.sql says, and the migrated
database has those triggers."""

import importlib.util
from pathlib import Path

import asyncpg

from tests.conftest import _libpq

ROOT = Path(__file__).resolve().parents[3]
MIGRATION = ROOT / "migrations" / "versions" / "2026_11_30_0012_events_and_webhooks.py"


def _statements(script: str) -> list[str]:
    code = [line for line in script.splitlines() if not line.startswith("--")]
    return [b.strip() for b in "\n".join(code).strip().split("\n\n") if b.strip()]


def test_the_migration_froze_the_file() -> None:
    spec = importlib.util.spec_from_file_location("migration_0012", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    live = (ROOT / "app" / "sql" / "event_triggers.sql").read_text()
    assert _statements(live) == module.statements(module.TRIGGERS)


async def test_the_triggers_are_installed(database_url: str) -> None:
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        found = await connection.fetch(
            "SELECT tgname, tgrelid::regclass::text AS tab FROM pg_trigger "
            "WHERE tgname IN ('import_finished', 'delivery_finished') ORDER BY tgname"
        )
    finally:
        await connection.close()
    assert [(r["tgname"], r["tab"]) for r in found] == [
        ("delivery_finished", "deliveries"),
        ("import_finished", "import_jobs"),
    ]
