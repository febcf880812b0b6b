"""Fixtures of the assignment engine's tests: an app that always takes the route, and
spies on the route and on the claims."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.services import assignments
from app.services.assignments import claim, service
from app.settings import Settings
from tests.conftest import make_client


@pytest.fixture(scope="session")
async def route_app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """The app without the lean path (and without coalescing: the route as it was)."""
    plain = settings.model_copy(update={"assign_fast_path": False, "coalesce_claims": False})
    application = create_app(plain, database_url=database_url)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def route(app: FastAPI, route_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``route_app`` holding the admin key (``app`` first: it cleans up)."""
    async with make_client(route_app) as http:
        yield http


@pytest.fixture
def route_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The set refs the FastAPI route was asked to assign for."""
    calls: list[str] = []
    original = assignments.assign

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["set_ref"])
        return await original(*args, **kwargs)

    monkeypatch.setattr(assignments, "assign", spy)
    return calls


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every claim made, in order: ``one`` (claim_code() on the plain pool), ``many``
    (claim_codes(), a coalesced batch whose set may hand out codes), ``session``
    (claim_code() in the request's transaction)."""
    made: list[str] = []

    def counted(kind: str, original: Any) -> Any:
        async def spy(*args: Any, **kwargs: Any) -> Any:
            made.append(kind)
            return await original(*args, **kwargs)

        return spy

    monkeypatch.setattr(claim.Claimer, "_claim_one", counted("one", claim.Claimer._claim_one))
    original_many = claim.ClaimCoalescer._claim_many

    async def many(*args: Any, **kwargs: Any) -> Any:
        # The batch's statement finds the set and pool too: a claim only where it may.
        rows = await original_many(*args, **kwargs)
        if rows and rows[0]["usable"]:
            made.append("many")
        return rows

    monkeypatch.setattr(claim.ClaimCoalescer, "_claim_many", staticmethod(many))
    monkeypatch.setattr(
        service, "_claim_in_savepoint", counted("session", service._claim_in_savepoint)
    )
    return made
