"""Shared codes' usage counters stay exact under real concurrency: redemptions, rollbacks,
releases, confirmations and expiring holds at once, sent in turn to two running
instances of the service (their batches meet in the database). After each scenario the counter must
equal the uses the redemptions table holds, and the uses left must be exactly what a
checkout can still take. Nothing here depends on timing: holds are expired by moving
their expiry into the past."""

import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.helpers import add_codes, create_set, redeem
from tests.live.conftest import live_instance
from tests.live.test_concurrency import ROUNDS, gather, problem_types, scalar

COUNTER = "SELECT u.uses FROM set_usage u JOIN coupon_sets s ON s.id = u.set_id WHERE s.key = :key"
ACTIVE = (
    "SELECT count(*) FROM redemptions r JOIN coupon_sets s ON s.id = r.set_id "
    "WHERE s.key = :key AND r.status IN ('redeemed', 'held')"
)


@pytest.fixture(scope="module")
def second_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another instance on the same database, beside the ``live`` one."""
    with live_instance(database_url, tmp_path_factory.mktemp("second") / "server.log") as url:
        yield url


class Instances:
    """Clients of both instances; ``next`` takes them in turn."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turn = itertools.cycle(clients)

    @property
    def next(self) -> httpx.AsyncClient:
        return next(self._turn)


@pytest.fixture
async def both(live: httpx.AsyncClient, second_server: str) -> AsyncIterator[Instances]:
    async with httpx.AsyncClient(
        base_url=second_server,
        headers=live.headers,
        limits=httpx.Limits(max_connections=400, max_keepalive_connections=400, keepalive_expiry=1),
        timeout=60,
    ) as second:
        yield Instances([live, second])


async def uses_left_are_exact(client: httpx.AsyncClient, app: FastAPI, key: str, code: str) -> int:
    """The counter equals the stored uses, validate tells the uses left, and exactly that
    many more redemptions go through, one by one, before the limit refuses."""
    counted = await scalar(app, COUNTER, key=key)
    assert counted == await scalar(app, ACTIVE, key=key)
    body = (await client.post("/v1/redemptions/validate", json={"code": code})).json()
    set_ = (await client.get(f"/v1/coupon-sets/{key}")).json()
    left = set_["max_uses"] - int(counted)  # type: ignore[call-overload]
    assert body["remaining_uses"] == (left if left else None)
    taken = 0
    while (await redeem(client, code)).status_code == 201:
        taken += 1
    assert taken == left
    assert await scalar(app, COUNTER, key=key) == set_["max_uses"]
    return left


async def test_mixed_workload_leaves_the_exact_uses(both: Instances, app: FastAPI) -> None:
    for round_ in range(ROUNDS):
        key, code = f"mixed-{round_}", f"MIXED{round_}"
        await create_set(both.next, key=key, kind="shared", shared_code=code, max_uses=30)
        redeemed = [(await redeem(both.next, code)).json()["id"] for _ in range(10)]
        held = [(await redeem(both.next, code, hold_seconds=600)).json()["id"] for _ in range(6)]
        responses = await gather(
            *(redeem(both.next, code, order_id=f"o{n}") for n in range(40)),
            *(redeem(both.next, code, hold_seconds=600) for _ in range(10)),
            *(both.next.post(f"/v1/redemptions/{i}/rollback") for i in redeemed for _ in range(2)),
            *(both.next.post(f"/v1/redemptions/{i}/release") for i in held[:3]),
            *(both.next.post(f"/v1/redemptions/{i}/confirm") for i in held[3:]),
            *(both.next.post("/v1/redemptions/validate", json={"code": code}) for _ in range(20)),
        )
        new, rollbacks = responses[:50], responses[50:70]
        settled, validations = responses[70:76], responses[76:]
        assert {r.status_code for r in new} <= {201, 409}
        assert problem_types(new) == {"max-uses-reached": sum(r.status_code == 409 for r in new)}
        assert Counter(r.status_code for r in rollbacks) == {200: 10, 409: 10}, "one each"
        assert {r.status_code for r in settled} == {200}
        assert {r.status_code for r in validations} == {200}
        active = 16 - 10 - 3 + sum(r.status_code == 201 for r in new)
        assert await scalar(app, ACTIVE, key=key) == active <= 30
        await uses_left_are_exact(both.next, app, key, code)


async def test_expired_holds_give_their_uses_back_exactly(both: Instances, app: FastAPI) -> None:
    for round_ in range(ROUNDS):
        key, code = f"expiry-{round_}", f"EXPIRY{round_}"
        await create_set(both.next, key=key, kind="shared", shared_code=code, max_uses=10)
        holds = await gather(*(redeem(both.next, code, hold_seconds=600) for _ in range(10)))
        assert {r.status_code for r in holds} == {201}
        ids = [r.json()["id"] for r in holds]
        assert (await redeem(both.next, code)).status_code == 409
        async with app.state.engine.begin() as connection:  # the holds' time runs out
            await connection.execute(
                text(
                    "UPDATE redemptions SET hold_expires_at = now() - interval '1 second' "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": [uuid.UUID(i) for i in ids]},
            )
        responses = await gather(
            *(redeem(both.next, code) for _ in range(30)),
            *(both.next.post(f"/v1/redemptions/{i}/release") for i in ids[:5]),
            *(both.next.post(f"/v1/redemptions/{i}/confirm") for i in ids[5:]),
        )
        new, released, confirmed = responses[:30], responses[30:35], responses[35:]
        assert Counter(r.status_code for r in new) == {201: 10, 409: 20}
        assert {r.status_code for r in released} == {200}
        assert {r.json()["status"] for r in released} == {"released"}
        assert problem_types(confirmed) == {"hold-expired": 5}
        assert await uses_left_are_exact(both.next, app, key, code) == 0


async def test_unique_codes_redeemed_and_rolled_back_at_once(both: Instances, app: FastAPI) -> None:
    for round_ in range(ROUNDS):
        key = f"uniq-{round_}"
        codes = [f"U{round_}X{n}" for n in range(20)]
        await create_set(both.next, key=key)
        await add_codes(both.next, key, codes)
        first = await gather(*(redeem(both.next, c, set=key) for c in codes for _ in range(5)))
        assert Counter(r.status_code for r in first) == {201: 20, 409: 80}
        ids = [r.json()["id"] for r in first if r.status_code == 201]
        second = await gather(
            *(both.next.post(f"/v1/redemptions/{i}/rollback") for i in ids for _ in range(2)),
            *(redeem(both.next, c, set=key) for c in codes for _ in range(3)),
        )
        rollbacks, again = second[:40], second[40:]
        assert Counter(r.status_code for r in rollbacks) == {200: 20, 409: 20}
        # A code is redeemed again at most once, and exactly when its row says so.
        assert {r.status_code for r in again} <= {201, 409}
        per_code = Counter(r.json()["code"] for r in again if r.status_code == 201)
        assert max(per_code.values(), default=1) == 1
        redeemed = await scalar(
            app,
            "SELECT count(*) FROM codes c JOIN coupon_sets s ON s.id = c.set_id "
            "WHERE s.key = :key AND c.status = 'redeemed'",
            key=key,
        )
        assert redeemed == len(per_code) == await scalar(app, ACTIVE, key=key)
