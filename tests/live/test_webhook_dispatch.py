"""Webhook dispatch across real server processes: a kill -9 mid-send loses nothing, and
two instances share the queue without sending one event twice at the same time."""

import asyncio
import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from tests.conftest import ADMIN_SECRET
from tests.helpers import add_codes, assign, create_set
from tests.live.conftest import serve
from tests.receiver import Delivery, receiving

HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}
DISPATCHING = {
    "webhook_dispatch": "true",
    "webhook_allow_private": "true",
    "webhook_timeout_seconds": "4",
    "webhook_retry_schedule": "0.2,0.4,0.8",
    "events_poll_seconds": "0.05",
}
EVENTS = 20
T = TypeVar("T")


@contextmanager
def both(*servers: AbstractContextManager[T]) -> Iterator[list[T]]:
    """Servers started side by side (each takes seconds on a busy machine)."""
    with ExitStack() as stack, ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(server.__enter__) for server in servers]
        for server, future in zip(servers, futures, strict=True):
            stack.push(server.__exit__)
            future.result()
        yield [future.result() for future in futures]


def _assigned(deliveries: list[Delivery]) -> set[str]:
    return {d.id for d in deliveries if json.loads(d.body)["type"] == "code.assigned"}


async def test_kill_9_mid_dispatch_loses_nothing(
    database_url: str, app: object, tmp_path: Path
) -> None:
    with receiving() as receiver:
        hanging = True
        # Every try hangs while the first instance lives; then answers at once.
        receiver.behaviour = lambda d: (200, {}, 30.0 if hanging else 0.0)
        with serve(database_url, tmp_path / "first.log", **DISPATCHING) as (url, process):
            async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
                made = await http.post(
                    "/v1/webhook-endpoints",
                    json={"url": receiver.url, "events": ["code.assigned"]},
                )
                secret = made.json()["secret"]
                await create_set(http, key="kill")
                await add_codes(http, "kill", [f"K-{n}" for n in range(EVENTS)])
                for n in range(EVENTS):
                    assert (await assign(http, "kill", f"r{n}")).status_code == 201
                await receiver.until(lambda r: len(r.deliveries) >= 1)
                process.send_signal(signal.SIGKILL)  # mid-send: the receiver has not answered
                process.wait()
        sent_before = _assigned(receiver.deliveries)
        assert sent_before
        hanging = False
        with serve(database_url, tmp_path / "second.log", **DISPATCHING) as (url, _):
            # The killed instance's leases run out (timeout + 5 s), then all is delivered.
            await receiver.until(lambda r: len(_assigned(r.deliveries)) == EVENTS, within=30)
            async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
                endpoint_id = made.json()["id"]
                for _ in range(200):
                    page = (
                        await http.get(
                            f"/v1/webhook-endpoints/{endpoint_id}/attempts", params={"limit": 50}
                        )
                    ).json()
                    if all(a["status"] == "succeeded" for a in page["items"]):
                        break
                    await asyncio.sleep(0.1)
        assert len(page["items"]) == EVENTS
        assert all(a["status"] == "succeeded" for a in page["items"]), page["items"]
        # The ones in flight at the kill were sent again, with the same id.
        assert {a["event_id"] for a in page["items"] if a["tries"] > 1} >= sent_before
    for delivery in receiver.deliveries:
        delivery.verify(secret)
    assert len(_assigned(receiver.deliveries)) == EVENTS


async def test_two_instances_share_the_queue_without_overlap(
    database_url: str, app: object, tmp_path: Path
) -> None:
    count = 200
    with receiving() as receiver:
        receiver.behaviour = lambda d: (200, {}, 0.02)
        with both(
            serve(database_url, tmp_path / "a.log", **DISPATCHING),
            serve(database_url, tmp_path / "b.log", **DISPATCHING),
        ) as ((a, _), (b, _)):
            async with (
                httpx.AsyncClient(base_url=a, headers=HEADERS, timeout=30) as first,
                httpx.AsyncClient(base_url=b, headers=HEADERS, timeout=30) as second,
            ):
                made = await first.post(
                    "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["*"]}
                )
                await create_set(first, key="share")
                await add_codes(first, "share", [f"S-{n}" for n in range(count)])
                await asyncio.gather(
                    *(assign(first if n % 2 else second, "share", f"r{n}") for n in range(count))
                )
                await receiver.until(lambda r: len(_assigned(r.deliveries)) == count, within=60)
                await asyncio.sleep(1.0)
    assigned = [d for d in receiver.deliveries if json.loads(d.body)["type"] == "code.assigned"]
    assert len(assigned) == count  # each exactly once
    assert receiver.overlaps == []
    for delivery in assigned:
        delivery.verify(made.json()["secret"])
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert "Traceback" not in logs, logs
