"""Faults: SIGTERM with requests in flight, and PostgreSQL going away under load."""

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.embedded import EmbeddedPostgres
from app.migrations import upgrade
from tests.conftest import ADMIN_SECRET, _libpq
from tests.helpers import add_codes, create_set
from tests.live.conftest import serve

HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}


async def _assigned(database_url: str, key: str) -> list[str]:
    connection = await asyncpg.connect(_libpq(database_url))
    try:
        rows = await connection.fetch(
            "SELECT c.code FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
            " WHERE s.key = $1 AND c.status = 'assigned'",
            key,
        )
    finally:
        await connection.close()
    return [row["code"] for row in rows]


async def test_sigterm_lets_requests_in_flight_finish(
    database_url: str, app: object, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path / "server.log") as (url, process):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
            await create_set(http, key="term")
            await add_codes(http, "term", [f"T-{n}" for n in range(200)])
            requests = [
                asyncio.create_task(
                    http.post("/v1/coupon-sets/term/assignments", json={"recipient_id": f"r{n}"})
                )
                for n in range(150)
            ]
            await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*requests, return_exceptions=True)
        assert process.wait(timeout=30) == 0
    responses = [r for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if not isinstance(r, httpx.Response)]
    # Requests the server had started all got their answer. The others failed at the
    # transport (refused, or closed before uvicorn read them) and did nothing: the
    # database holds exactly the answered assignments.
    assert all(isinstance(r, httpx.TransportError) for r in refused), refused[:3]
    assert Counter(r.status_code for r in responses) == {201: len(responses)}
    assert responses, "some requests were in flight"
    assigned = await _assigned(database_url, "term")
    assert sorted(assigned) == sorted(r.json()["code"] for r in responses)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path / "pg", delete_on_exit=True) as server:
        upgrade(server.url())
        yield server


async def test_a_database_restart_under_load_is_503s_then_recovery(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    database_url = own_postgres.url()
    with serve(database_url, tmp_path / "server.log", db_pool_timeout="2") as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
            await create_set(http, key="fault")
            generated = await http.post(
                "/v1/coupon-sets/fault/codes/generate",
                json={"count": 50_000, "length": 10, "min_space_ratio": 2},
            )
            assert generated.status_code == 201
            responses: list[httpx.Response] = []
            stop = asyncio.Event()

            async def client(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    responses.append(
                        await http.post(
                            "/v1/coupon-sets/fault/assignments",
                            json={"recipient_id": f"w{worker}-{n}"},
                        )
                    )

            workers = [asyncio.create_task(client(w)) for w in range(8)]
            await asyncio.sleep(1)
            await asyncio.to_thread(own_postgres.stop_server)
            await asyncio.sleep(2)
            during = len(responses)
            await asyncio.to_thread(own_postgres.start_server)
            await asyncio.sleep(3)
            stop.set()
            await asyncio.gather(*workers)
            after = await http.post("/v1/coupon-sets/fault/assignments", json={"recipient_id": "z"})
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 503}, statuses
    assert statuses[503] > 0, "the outage was seen"
    assert all(
        r.headers["content-type"] == "application/problem+json" and r.headers["retry-after"]
        for r in responses
        if r.status_code == 503
    )
    assert any(r.status_code == 201 for r in responses[during:]), "it recovered by itself"
    assert after.status_code == 201
    granted = [r.json()["code"] for r in responses if r.status_code == 201] + [after.json()["code"]]
    assigned = await _assigned(database_url, "fault")
    assert len(set(granted)) == len(granted), "no code twice"
    # Every success a client saw is kept. (A commit cut off by the shutdown can succeed
    # unseen: its client got a 503 and would retry with its Idempotency-Key.)
    assert set(granted) <= set(assigned)
    assert len(assigned) - len(granted) <= statuses[503]
