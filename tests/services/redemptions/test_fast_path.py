"""The lean path of redeem and validate answers exactly as the FastAPI routes do.

Each request is sent to the app (lean path on) and to an app on the same database with
the lean path off, which always takes the route: status, headers and body must be the
same (but the request id; and, for two new redemptions, their own id and time)."""

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.ratelimit import RateLimiter
from app.services import redemptions
from app.settings import Settings
from tests.conftest import make_client, running
from tests.helpers import add_codes, assign, create_set, problem_type
from tests.services.assignments.test_fast_path import _body, _headers, assert_same

REDEEM, VALIDATE = "/v1/redemptions", "/v1/redemptions/validate"


@pytest.fixture
async def route(
    app: FastAPI, settings: Settings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app without the redemptions' lean path: always the routes."""
    async with (
        running(settings, database_url, redeem_fast_path=False) as plain,
        make_client(plain) as http,
    ):
        yield http


@pytest.fixture
def route_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The codes the FastAPI routes were asked to redeem or validate."""
    calls: list[str] = []

    def spying(original: Any) -> Any:
        async def spy(*args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs["data"].code)
            return await original(*args, **kwargs)

        return spy

    for name in ("redeem", "validate"):
        monkeypatch.setattr(redemptions, name, spying(getattr(redemptions, name)))
    return calls


async def send(http: httpx.AsyncClient, path: str, body: object, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    return await http.post(path, content=content, headers=headers)


@pytest.fixture
async def sets(client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring", bind_to_recipient=True)
    await add_codes(client, "spring", ["C-1", "C-2", "C-3", "VOID-1", "USED-1", "BOTH"])
    await assign(client, "spring", "alice")  # C-1
    await client.post("/v1/coupon-sets/spring/codes/VOID-1/void")
    await create_set(client, key="other")
    await add_codes(client, "other", ["BOTH"])
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME", max_uses=1)
    await create_set(client, key="once", kind="shared", shared_code="ONCE", per_recipient_limit=1)
    ended = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await create_set(client, key="past", kind="shared", shared_code="PAST", valid_until=ended)
    for code in ("USED-1", "WELCOME"):
        assert (await send(client, REDEEM, {"code": code})).status_code == 201


async def test_new_redemptions_are_answered_like_the_route(
    client: httpx.AsyncClient, route: httpx.AsyncClient, route_calls: list[str], sets: None
) -> None:
    route_calls.clear()
    lean = await send(client, REDEEM, {"code": "c 2", "order_id": "o-1", "amount": "5"})
    assert route_calls == []  # the lean path answered
    routed = await send(route, REDEEM, {"code": "c 3", "order_id": "o-1", "amount": "5"})
    assert route_calls == ["c 3"]
    assert (lean.status_code, routed.status_code) == (201, 201)
    assert _headers(lean) == _headers(routed)
    mine, theirs = _body(lean), _body(routed)
    assert (mine.pop("code"), theirs.pop("code")) == ("C-2", "C-3")
    for name in ("id", "redeemed_at"):
        assert mine.pop(name) != theirs.pop(name)
    assert mine == theirs
    assert mine["amount"] == "5"  # echoed as sent


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (REDEEM, {"code": "USED-1"}, {}),
        (REDEEM, {"code": "VOID-1"}, {}),
        (REDEEM, {"code": "NOPE"}, {}),
        (REDEEM, {"code": "BOTH"}, {}),
        (REDEEM, {"code": "C-1", "recipient_id": "mallory"}, {}),
        (REDEEM, {"code": "WELCOME"}, {}),
        (REDEEM, {"code": "ONCE"}, {}),
        (REDEEM, {"code": "PAST"}, {}),
        (REDEEM, {"code": "C-2", "set": "other"}, {}),
        (REDEEM, {"code": "C-2", "extra": 1}, {}),
        (REDEEM, {"code": "C-2", "hold_seconds": 0}, {}),
        (REDEEM, {"code": "C\u00002"}, {}),
        (REDEEM, b"{not json", {}),
        (REDEEM, b"[" * 50_000, {}),
        (REDEEM, {"code": "C-2"}, {"Content-Type": "text/plain"}),
        (REDEEM, {"code": "C-2"}, {"Authorization": "Bearer nope"}),
        (REDEEM, {"code": "C-2"}, {"Authorization": "Basic abc"}),
        (VALIDATE, {"code": "C-2"}, {}),
        (VALIDATE, {"code": "USED-1"}, {}),
        (VALIDATE, {"code": "NOPE"}, {}),
        (VALIDATE, {"code": "BOTH"}, {}),
        (VALIDATE, {"code": "WELCOME"}, {}),
        (VALIDATE, {"code": "ONCE"}, {}),
        (VALIDATE, {"code": "PAST", "redeemed_at": "2000-01-01T00:00:00Z"}, {}),
    ],
)
async def test_refusals_and_validations_are_answered_like_the_route(
    client: httpx.AsyncClient,
    route: httpx.AsyncClient,
    sets: None,
    path: str,
    body: object,
    headers: dict[str, str],
) -> None:
    lean = await send(client, path, body, **headers)
    assert lean.status_code >= 400 or path == VALIDATE, lean.text
    assert_same(lean, await send(route, path, body, **headers))


async def test_an_idempotency_key_takes_the_route(
    client: httpx.AsyncClient, route_calls: list[str], sets: None
) -> None:
    route_calls.clear()
    first = await send(client, REDEEM, {"code": "C-2"}, **{"Idempotency-Key": "k-1"})
    again = await send(client, REDEEM, {"code": "C-2"}, **{"Idempotency-Key": "k-1"})
    assert route_calls == ["C-2"]
    assert (first.status_code, again.headers["idempotent-replayed"]) == (201, "true")
    assert again.json() == first.json()


async def test_the_rate_limit_counts_each_request_once(
    app: FastAPI, client: httpx.AsyncClient, key_client: Callable[..., Any], sets: None
) -> None:
    redeemer: httpx.AsyncClient = await key_client("redeem")
    reader: httpx.AsyncClient = await key_client("read")
    default = app.state.redeem_limiter
    app.state.redeem_limiter = RateLimiter("3/minute")
    try:
        assert (await send(reader, VALIDATE, {"code": "C-2"})).status_code == 403
        statuses = [(await send(redeemer, VALIDATE, {"code": "C-2"})).status_code]
        statuses.append((await send(redeemer, VALIDATE, {"code": "C-2", "x": 1})).status_code)
        statuses.append((await send(redeemer, REDEEM, {"code": "C-2"})).status_code)
        limited = await send(redeemer, REDEEM, {"code": "C-3"})
    finally:
        app.state.redeem_limiter = default
        await redeemer.aclose()
        await reader.aclose()
    assert statuses == [200, 422, 201]
    assert problem_type(limited) == "too-many-requests"
    assert int(limited.headers["retry-after"]) >= 1


async def test_lean_answers_are_counted_in_the_metrics(
    client: httpx.AsyncClient, sets: None
) -> None:
    await send(client, REDEEM, {"code": "C-2"})
    await send(client, VALIDATE, {"code": "C-3"})
    await send(client, REDEEM, {"code": "NOPE"})
    metrics = (await client.get("/metrics")).text
    for handler, status in ((REDEEM, "2xx"), (VALIDATE, "2xx"), (REDEEM, "4xx")):
        assert f'handler="{handler}",method="POST",status="{status}"' in metrics
