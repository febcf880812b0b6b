"""The production topology: two instances of the service behind PgBouncer in transaction
mode (COUPONS_DB_PGBOUNCER=true, DATABASE_DIRECT_URL for migrations and imports), sharing
one Redis for the rate limit, one PostgreSQL behind both. The races run across both
instances, requests sent to them in turn, as a load balancer would.

PgBouncer and Redis are started by the tests (tests/external.py); where they are not
installed the module is skipped (a failure under .ci/run)."""

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN_SECRET
from tests.external import pgbouncer_server, redis_server
from tests.helpers import add_codes, create_set, import_codes, redeem
from tests.live.conftest import serve
from tests.live.test_concurrency import gather, problem_types, scalar
from tests.live.test_redemption_counters import uses_left_are_exact
from tests.routers.test_deliveries import add_targets, create_delivery, targets

RATE = 60  # redeem + validate per key and minute, across both instances

# Seconds on a quiet machine; a busy one (other suites, two instances and PgBouncer on
# two cores) can take several times as long.
pytestmark = pytest.mark.timeout(300)

ASSIGNED = (
    "SELECT count(*), count(DISTINCT recipient_id) FROM codes c "
    "JOIN coupon_sets s ON s.id = c.set_id WHERE s.key = :key AND c.status = 'assigned'"
)


async def assigned(app: FastAPI, key: str) -> tuple[int, int]:
    """The set's assigned codes, and the distinct recipients holding them."""
    async with app.state.engine.connect() as connection:
        row = (await connection.execute(text(ASSIGNED), {"key": key})).one()
    return int(row[0]), int(row[1])


class Instance:
    """One instance of the service through PgBouncer; ``restart`` stops it (SIGTERM,
    requests in flight drain) and starts it again on a new port."""

    def __init__(self, name: str, bouncer_url: str, settings: dict[str, str], logs: Path) -> None:
        self.name, self.bouncer_url, self.settings, self.logs = name, bouncer_url, settings, logs
        self.url = ""
        self._stack = contextlib.ExitStack()
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        log = self.logs / f"{self.name}-{self._starts}.log"
        self.url, _ = self._stack.enter_context(serve(self.bouncer_url, log, **self.settings))

    def stop(self) -> None:
        self._stack.close()
        for log in self.logs.glob(f"{self.name}-*.log"):
            assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def instances(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    with pgbouncer_server(database_url) as bouncer_url, redis_server() as redis_url:
        settings = {
            "db_pgbouncer": "true",
            "database_direct_url": database_url,
            "rate_limit_storage": redis_url,
            "redeem_rate_limit": f"{RATE}/minute",
            "db_pool_timeout": "30",
        }
        logs = tmp_path_factory.mktemp("topology")
        both = [Instance(name, bouncer_url, settings, logs) for name in ("a", "b")]
        try:
            for instance in both:
                instance.start()
            yield both
        finally:
            for instance in both:
                instance.stop()


def _client(url: str, secret: str = ADMIN_SECRET) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {secret}"},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=1),
        timeout=60,
    )


@contextlib.asynccontextmanager
async def clients(
    instances: list[Instance], secret: str = ADMIN_SECRET
) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(_client(instance.url, secret)) for instance in instances
        ]


async def new_key(client: httpx.AsyncClient, *scopes: str) -> tuple[str, str]:
    response = await client.post(
        "/v1/api-keys", json={"name": f"topology {uuid.uuid4()}", "scopes": list(scopes)}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["secret"]


async def test_1500_assignments_for_500_codes_across_two_instances(
    instances: list[Instance], app: FastAPI
) -> None:
    async with clients(instances) as (a, b):
        await create_set(a, key="topo-race")
        await add_codes(b, "topo-race", [f"T-{n:04}" for n in range(500)])
        turn = itertools.cycle((a, b))
        responses = await gather(
            *(
                next(turn).post(
                    "/v1/coupon-sets/topo-race/assignments", json={"recipient_id": f"r{n}"}
                )
                for n in range(1500)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 500, 409: 1000}, statuses
    assert problem_types(responses) == {"pool-exhausted": 1000}
    assert len({r.json()["code"] for r in responses if r.status_code == 201}) == 500
    assert await assigned(app, "topo-race") == (500, 500)


async def test_one_recipient_across_both_instances_gets_one_code(
    instances: list[Instance], app: FastAPI
) -> None:
    async with clients(instances) as (a, b):
        await create_set(a, key="topo-one")
        await add_codes(a, "topo-one", [f"O-{n}" for n in range(40)])
        turn = itertools.cycle((a, b))
        responses = await gather(
            *(
                next(turn).post(
                    "/v1/coupon-sets/topo-one/assignments", json={"recipient_id": "ann"}
                )
                for _ in range(60)
            )
        )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 59}
    assert len({r.json()["code"] for r in responses}) == 1
    held = await scalar(
        app,
        "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id"
        " WHERE s.key = 'topo-one' AND c.recipient_id = 'ann'",
    )
    assert held == 1


async def test_holds_and_shared_limits_across_both_instances(
    instances: list[Instance], app: FastAPI
) -> None:
    async with clients(instances) as (a, b):
        _, secret = await new_key(a, "redeem", "read")
        await create_set(a, key="topo-shared", kind="shared", shared_code="TOPO", max_uses=20)
    async with clients(instances, secret) as (a, b):
        turn = itertools.cycle((a, b))
        holds = await gather(*(redeem(next(turn), "TOPO", hold_seconds=600) for _ in range(12)))
        assert {r.status_code for r in holds} == {201}
        ids = [r.json()["id"] for r in holds]
        responses = await gather(
            *(redeem(next(turn), "TOPO", order_id=f"o{n}") for n in range(16)),
            *(next(turn).post(f"/v1/redemptions/{i}/release") for i in ids[:4]),
            *(next(turn).post(f"/v1/redemptions/{i}/confirm") for i in ids[4:8]),
        )
        new, settled = responses[:16], responses[16:]
        # 12 held, 4 released meanwhile: 8 + 4 = 12 uses left at most for 16 tries.
        assert {r.status_code for r in settled} == {200}
        assert {r.status_code for r in new} <= {201, 409}
        taken = sum(r.status_code == 201 for r in new)
        assert 8 <= taken <= 12
        assert problem_types(new) == {"max-uses-reached": 16 - taken}
        assert await uses_left_are_exact(b, app, "topo-shared", "TOPO") == 12 - taken


async def test_the_rate_limit_is_shared_by_both_instances(instances: list[Instance]) -> None:
    async with clients(instances) as (a, _):
        _, secret = await new_key(a, "redeem")
    async with clients(instances, secret) as (a, b):
        turn = itertools.cycle((a, b))
        responses = await gather(
            *(next(turn).post("/v1/redemptions/validate", json={"code": "NOPE"}) for _ in range(90))
        )
    statuses = Counter(r.status_code for r in responses)
    # Each instance alone would allow RATE: together they allow RATE, not 2 * RATE.
    assert statuses[429] == 90 - RATE, statuses
    assert set(statuses) == {200, 429}, statuses


async def test_a_revoked_key_is_refused_by_every_instance_within_a_second(
    instances: list[Instance],
) -> None:
    """20 request loops per instance keep the key's cache entries warm; the key is
    revoked through instance a. No request that a begins after the revocation answered
    is accepted, and none that b begins more than 1 s after it."""
    async with clients(instances) as (admin, _):
        key_id, secret = await new_key(admin, "assign")
        await create_set(admin, key="topo-revoke")
        await add_codes(admin, "topo-revoke", [f"V-{n}" for n in range(40)])
        results: list[list[tuple[float, int]]] = [[], []]
        stop = asyncio.Event()

        async def loop(client: httpx.AsyncClient, out: list[tuple[float, int]], n: int) -> None:
            while not stop.is_set():
                began = time.monotonic()
                response = await client.post(
                    "/v1/coupon-sets/topo-revoke/assignments", json={"recipient_id": f"v{n}"}
                )
                out.append((began, response.status_code))

        async with clients(instances, secret) as users:
            loops = [
                asyncio.create_task(loop(users[i], results[i], n))
                for i in (0, 1)
                for n in range(20)
            ]
            await asyncio.sleep(0.5)
            assert {status for _, status in results[0] + results[1]} <= {200, 201}
            revoked = await admin.delete(f"/v1/api-keys/{key_id}")
            answered = time.monotonic()
            assert revoked.status_code == 204, revoked.text
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*loops)
    same = [status for began, status in results[0] if began > answered]
    other = [status for began, status in results[1] if began > answered + 1.0]
    assert set(same) == {401}, Counter(same)
    assert set(other) == {401}, Counter(other)
    accepted_late = [
        began - answered for began, status in results[1] if began > answered and status < 400
    ]
    assert max(accepted_late, default=0) <= 1.0


async def test_imports_and_confirms_run_through_pgbouncer(instances: list[Instance]) -> None:
    """An import job (its rows staged in a session of its own, on DATABASE_DIRECT_URL)
    and a delivery's confirm (its lock held by a transaction of its own) through
    PgBouncer; each on one instance, read back on the other."""
    async with clients(instances) as (a, b):
        await create_set(a, key="topo-jobs")
        body = "\n".join(f"J-{n:04}" for n in range(300)).encode()
        imported = await import_codes(
            a, "topo-jobs", body, filename="codes.txt", content_type="text/plain"
        )
        assert imported.status_code == 201, imported.text
        job = (await b.get(f"/v1/coupon-sets/topo-jobs/imports/{imported.json()['id']}")).json()
        assert (job["status"], job["accepted"]) == ("succeeded", 300), job
        delivery = await create_delivery(b, coupon_set_id="topo-jobs")
        await add_targets(b, delivery["id"], targets(50))
        assert (await b.post(f"/v1/deliveries/{delivery['id']}/analyze")).status_code == 200
        confirmed = await b.post(f"/v1/deliveries/{delivery['id']}/confirm")
        assert confirmed.status_code in (200, 202), confirmed.text
        for _ in range(300):
            status = (await a.get(f"/v1/deliveries/{delivery['id']}")).json()
            if status["status"] != "sending":
                break
            await asyncio.sleep(0.1)
        assert (status["status"], status["assigned"]) == ("finished", 50), status


async def test_a_rolling_restart_under_load_fails_no_request(
    instances: list[Instance], app: FastAPI
) -> None:
    """Assignments run against both instances while b restarts (SIGTERM: it stops
    accepting, drains what it accepted, and comes back on a new address). The clients
    act as a load balancer: a request that got no answer at all (b refused or dropped
    the connection while stopping) goes to the other instance, and a 503 is retried;
    an assignment is idempotent per recipient, so a retry never gives a second code.
    Nothing else may fail: every recipient ends with exactly one code."""
    a, b = instances
    answers: Counter[str] = Counter()
    async with _client(a.url) as admin:
        await create_set(admin, key="topo-roll")
        await add_codes(admin, "topo-roll", [f"W-{n:05}" for n in range(6000)])
    stop = asyncio.Event()
    recipients = (f"w{n}" for n in itertools.count())
    targets = {"a": a.url, "b": b.url}

    async def one(recipient: str, first: str) -> None:
        order = [first, "a" if first == "b" else "b"]
        for attempt in range(20):
            name = order[attempt % 2]
            try:
                async with _client(targets[name]) as client:
                    response = await client.post(
                        "/v1/coupon-sets/topo-roll/assignments", json={"recipient_id": recipient}
                    )
            except httpx.TransportError:
                answers["rerouted"] += 1
                continue
            if response.status_code == 503:
                answers["503"] += 1
                await asyncio.sleep(0.05)
                continue
            assert response.status_code in (200, 201), response.text
            answers[str(response.status_code)] += 1
            return
        raise AssertionError(f"{recipient} got no code")

    async def load(first: str) -> None:
        try:
            while not stop.is_set():
                await one(next(recipients), first)
                await asyncio.sleep(0.01)  # steady load that leaves b cores to restart on
        finally:
            stop.set()  # one failing stops all: the test sees its error

    workers = [asyncio.create_task(load(name)) for name in ("a", "b") for _ in range(3)]
    try:
        await asyncio.sleep(1.0)
        began = time.monotonic()
        await asyncio.to_thread(b.stop)
        stopped = time.monotonic()
        await asyncio.to_thread(b.start)
        targets["b"] = b.url
        answers["stop s"], answers["start s"] = (
            int(stopped - began),
            int(time.monotonic() - stopped),
        )
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert answers["201"] > 50, answers
    total = answers["201"] + answers["200"]
    # One code each: as many codes as recipients answered, none twice.
    assert await assigned(app, "topo-roll") == (total, total), answers
