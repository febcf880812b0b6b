"""Webhooks end to end: a real receiver, every delivery checked with the
standardwebhooks library."""

import asyncio
import time

import httpx
from fastapi import FastAPI

from app.settings import Settings
from tests.conftest import make_client, running
from tests.helpers import add_codes, assign, create_set, problem_type
from tests.receiver import Receiver, receiving
from tests.services.events.conftest import FAST, attempts, endpoint


async def test_an_assignment_is_delivered_signed_the_standard_way(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    assert str(hook["secret"]).startswith("whsec_")
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    assert (await assign(http, "spring", "contact-42")).status_code == 201

    await receiver.until(lambda r: len(r.deliveries) == 1)
    delivery = receiver.deliveries[0]
    payload = delivery.verify(str(hook["secret"]))
    assert payload["type"] == "code.assigned"
    assert payload["data"] | {"set_id": None} == {
        "set_id": None,
        "set_key": "spring",
        "code": "SPRING-1",
        "recipient_id": "contact-42",
        "pool": "default",
        "delivery_id": None,
    }
    assert delivery.id.startswith("evt_")
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    found = await attempts(http, hook["id"], settled=1)
    assert [(a["status"], a["tries"], a["response_status"]) for a in found] == [
        ("succeeded", 1, 200)
    ]


async def test_failures_are_retried_with_the_same_id_until_delivered(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.behaviour = lambda d: (500, {}, 0.0) if d.seen_before < 2 else (200, {}, 0.0)
    hook = await endpoint(http, receiver.url)
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    await assign(http, "spring", "contact-42")

    await receiver.until(lambda r: len(r.of_type("code.assigned")) == 3)
    tries = receiver.of_type("code.assigned")
    assert len({d.id for d in tries}) == 1
    for d in tries:
        d.verify(str(hook["secret"]))
    # Back-off: 0.2 s then 0.4 s (each ±20 %).
    assert tries[1].at - tries[0].at >= 0.15
    assert tries[2].at - tries[1].at >= 0.3
    (attempt,) = await attempts(http, hook["id"], settled=1, event_type="code.assigned")
    assert (attempt["status"], attempt["tries"], attempt["response_status"]) == (
        "succeeded",
        3,
        200,
    )


async def test_retry_after_is_honoured(http: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.behaviour = lambda d: (
        (429, {"Retry-After": "2"}, 0.0) if d.seen_before == 0 else (200, {}, 0.0)
    )
    await endpoint(http, receiver.url, ["code.assigned"])
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    await assign(http, "spring", "contact-42")
    await receiver.until(lambda r: len(r.deliveries) == 2)
    first, second = receiver.deliveries
    assert first.id == second.id
    assert second.at - first.at >= 1.9  # not the schedule's 0.2 s


async def test_an_attempt_fails_after_the_schedule_and_can_be_retried(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.behaviour = lambda d: (503, {}, 0.0)
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    await assign(http, "spring", "contact-42")
    # The first try and one per delay of the schedule (0.2, 0.4, 0.8).
    await receiver.until(lambda r: len(r.deliveries) == 4)
    url = f"/v1/webhook-endpoints/{hook['id']}/attempts"
    (attempt,) = await attempts(http, hook["id"], settled=1)
    assert attempt["status"] == "failed"
    assert (attempt["tries"], attempt["response_status"], attempt["next_attempt_at"]) == (
        4,
        503,
        None,
    )
    await asyncio.sleep(1.0)
    assert len(receiver.deliveries) == 4  # given up

    receiver.behaviour = lambda d: (200, {}, 0.0)
    retried = await http.post(f"{url}/{attempt['id']}/retry")
    assert retried.status_code == 202, retried.text
    await receiver.until(lambda r: len(r.deliveries) == 5)
    assert receiver.deliveries[4].id == receiver.deliveries[0].id
    again = await http.post(f"{url}/{attempt['id']}/retry")
    assert again.status_code in (202, 409)
    missing = await http.post(f"{url}/999999999/retry")
    assert missing.status_code == 404
    assert problem_type(missing) == "not-found"


async def test_an_endpoint_failing_too_long_is_disabled_and_the_others_are_told(
    app: FastAPI, receiver: Receiver, settings: Settings, database_url: str
) -> None:
    changes = FAST | {
        "webhook_disable_after_seconds": 0.5,
        "webhook_retry_schedule": "0.3,0.3,0.3,0.3,0.3,0.3",
    }
    with receiving() as healthy:
        async with (
            running(settings, database_url, **changes) as dispatching,
            make_client(dispatching) as http,
        ):
            receiver.behaviour = lambda d: (500, {}, 0.0)
            failing = await endpoint(http, receiver.url, ["code.assigned"])
            other = await endpoint(http, healthy.url, ["webhook_endpoint.disabled"])
            await create_set(http, key="spring")
            await add_codes(http, "spring", ["SPRING-1"])
            await assign(http, "spring", "contact-42")
            await healthy.until(lambda r: len(r.deliveries) == 1)
            payload = healthy.deliveries[0].verify(str(other["secret"]))
            assert payload["type"] == "webhook_endpoint.disabled"
            assert payload["data"]["endpoint_id"] == failing["id"]
            shown = (await http.get(f"/v1/webhook-endpoints/{failing['id']}")).json()
            assert shown["enabled"] is False
            assert shown["disabled_reason"].startswith("every delivery failed since")
            sent = len(receiver.deliveries)
            await asyncio.sleep(1.0)
            assert len(receiver.deliveries) == sent  # no more tries while disabled

            # Enabled again, the pending attempt is delivered.
            receiver.behaviour = lambda d: (200, {}, 0.0)
            enabled = await http.patch(
                f"/v1/webhook-endpoints/{failing['id']}", json={"enabled": True}
            )
            assert enabled.json()["disabled_reason"] is None
            await receiver.until(lambda r: len(r.deliveries) > sent)
            found = await attempts(http, failing["id"], settled=1)
            assert found[0]["status"] == "succeeded"


async def test_a_rotated_secret_signs_alongside_the_new_one(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    rotated = await http.post(f"/v1/webhook-endpoints/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"] != hook["secret"]
    assert new["previous_secret_expires_at"]
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    await assign(http, "spring", "contact-42")
    await receiver.until(lambda r: len(r.deliveries) == 1)
    delivery = receiver.deliveries[0]
    delivery.verify(str(hook["secret"]), str(new["secret"]))
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2


async def test_the_test_route_sends_a_signed_ping(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = await endpoint(http, receiver.url, ["code.assigned"], enabled=False)
    answer = await http.post(f"/v1/webhook-endpoints/{hook['id']}/test")
    assert answer.status_code == 200, answer.text
    assert answer.json()["delivered"] is True
    assert answer.json()["response_status"] == 200
    payload = receiver.deliveries[0].verify(str(hook["secret"]))
    assert payload["type"] == "ping"
    found = await attempts(http, hook["id"], settled=1)
    assert found[0]["event_type"] == "ping"

    receiver.behaviour = lambda d: (404, {}, 0.0)
    failed = (await http.post(f"/v1/webhook-endpoints/{hook['id']}/test")).json()
    assert (failed["delivered"], failed["response_status"], failed["error"]) == (
        False,
        404,
        "HTTP 404",
    )


async def test_redirects_are_not_followed_and_bodies_are_capped(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.behaviour = lambda d: (302, {"Location": "http://169.254.169.254/"}, 0.0)
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    answer = (await http.post(f"/v1/webhook-endpoints/{hook['id']}/test")).json()
    assert (answer["delivered"], answer["response_status"]) == (False, 302)
    assert len(receiver.deliveries) == 1


async def test_a_slow_receiver_times_out(http: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.behaviour = lambda d: (200, {}, 3.0)
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    answer = (await http.post(f"/v1/webhook-endpoints/{hook['id']}/test")).json()
    assert (answer["delivered"], answer["error"]) == (False, "timed out")
    assert 1900 <= answer["duration_ms"] < 3000


async def test_only_subscribed_types_and_enabled_endpoints_receive(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await endpoint(http, receiver.url, ["redemption.created"])
    await endpoint(http, receiver.url, ["code.assigned"], enabled=False)
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1", "SPRING-2"])
    await assign(http, "spring", "contact-42")
    redeemed = await http.post("/v1/redemptions", json={"code": "SPRING-2", "order_id": "o-1"})
    assert redeemed.status_code == 201, redeemed.text
    await receiver.until(lambda r: len(r.deliveries) == 1)
    await asyncio.sleep(0.5)
    (delivery,) = receiver.deliveries
    import json

    body = json.loads(delivery.body)
    assert body["type"] == "redemption.created"
    assert body["data"]["code"] == "SPRING-2"
    assert body["data"]["order_id"] == "o-1"
    assert body["data"]["status"] == "redeemed"


async def test_the_queue_and_outcomes_are_metrics(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.behaviour = lambda d: (500, {}, 0.0) if d.seen_before == 0 else (200, {}, 0.0)
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    await create_set(http, key="spring")
    await add_codes(http, "spring", ["SPRING-1"])
    await assign(http, "spring", "contact-42")
    await attempts(http, hook["id"], settled=1)
    text = (await http.get("/metrics")).text
    assert 'coupons_webhook_attempts_total{outcome="retry"} 1.0' in text
    assert 'coupons_webhook_attempts_total{outcome="delivered"} 1.0' in text
    assert "coupons_webhook_queue_depth" in text
    assert "coupons_webhook_lag_seconds" in text
