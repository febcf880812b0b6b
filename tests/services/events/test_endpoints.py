"""Webhook endpoints: the API (admin scope, validation), and the SSRF guard: every
spelling of a private address refused when saved and again when sent."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.errors import UrlNotAllowed
from app.services.events.urls import Resolver, check_resolved, check_url
from app.settings import Settings
from tests.conftest import make_client, running
from tests.helpers import add_codes, assign, create_set, problem_type
from tests.receiver import Receiver
from tests.services.events.conftest import FAST, attempts, endpoint

REFUSED = [
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://sub.localhost/hook",
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://127.0.1/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://0X7F.0.0.1/hook",
    "http://0177.0.0.1/hook",
    "http://017700000001/hook",
    "http://0/hook",
    "http://0.0.0.0/hook",
    "http://10.0.0.1/hook",
    "http://10.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1:8080/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[0:0:0:0:0:0:0:1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[::127.0.0.1]/hook",
    "http://[64:ff9b::10.0.0.1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://[fe80::1%25eth0]/hook",
    "http://[fd00:ec2::254]/hook",
    "http://[fc00::1]/hook",
    "http://[ff02::1]/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "http://user:pass@example.com/hook",
    "http:///hook",
]


@pytest.fixture(scope="module")
async def guarded(app: FastAPI, settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """An app as in production: private addresses refused."""
    async with running(
        settings, database_url, webhook_allow_private=False, webhook_dispatch=False
    ) as application:
        yield application


@pytest.mark.parametrize("url", REFUSED)
async def test_private_addresses_are_refused_in_every_spelling(guarded: FastAPI, url: str) -> None:
    async with make_client(guarded) as http:
        refused = await http.post("/v1/webhook-endpoints", json={"url": url, "events": ["*"]})
        assert refused.status_code == 422, refused.text
        assert problem_type(refused) == "url-not-allowed"
        assert (await http.get("/v1/webhook-endpoints")).json()["items"] == []


@pytest.mark.parametrize(
    "url", ["https://93.184.215.14/hook", "https://[2606:4700:4700::1111]/hook", "http://8.8.8.8"]
)
async def test_public_addresses_are_accepted(guarded: FastAPI, url: str) -> None:
    async with make_client(guarded) as http:
        made = await http.post("/v1/webhook-endpoints", json={"url": url, "events": ["*"]})
        assert made.status_code == 201, made.text
        changed = await http.patch(
            f"/v1/webhook-endpoints/{made.json()['id']}", json={"url": "http://127.1:80/"}
        )
        assert problem_type(changed) == "url-not-allowed"


async def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    from app.services.events.urls import parse_ip, refusal

    if not all(refusal(parse_ip(a) or parse_ip(f"[{a}]")) for a in addresses):  # type: ignore[arg-type]
        pytest.skip(f"{name} resolves to a public address here")
    with pytest.raises(UrlNotAllowed, match="resolves to"):
        await check_resolved(f"https://{name}/hook", allow_private=False, production=True)
    target = check_url(f"https://{name}/hook", allow_private=False, production=True)
    with pytest.raises(UrlNotAllowed, match="resolves to"):
        await Resolver(allow_private=False).resolve(target)


def test_production_wants_https() -> None:
    with pytest.raises(UrlNotAllowed, match="https in production"):
        check_url("http://93.184.215.14/hook", allow_private=False, production=True)
    check_url("https://93.184.215.14/hook", allow_private=False, production=True)
    check_url("http://localhost:9/hook", allow_private=True, production=False)


async def test_the_address_is_checked_again_when_sending(
    app: FastAPI, settings: Settings, database_url: str, receiver: Receiver
) -> None:
    """Saved while private addresses were allowed; sent by an instance that refuses them
    (as a name that resolved elsewhere when saved would be): never connected to."""
    async with make_client(app) as admin:
        hook = await endpoint(admin, receiver.url.replace("127.0.0.1", "localhost"))
        await create_set(admin, key="spring")
        await add_codes(admin, "spring", ["SPRING-1"])
        async with (
            running(settings, database_url, **(FAST | {"webhook_allow_private": False})) as strict,
            make_client(strict) as http,
        ):
            await assign(http, "spring", "contact-1")
            for _ in range(100):
                found = await attempts(http, hook["id"])
                if found and found[0]["error"]:
                    break
                await asyncio.sleep(0.05)
            assert str(found[0]["error"]).startswith("url-not-allowed")
            assert found[0]["response_status"] is None
    assert receiver.deliveries == []


async def test_endpoint_crud(http: httpx.AsyncClient, key_client: Any) -> None:
    made = await endpoint(
        http, "https://hooks.example.com/a", ["code.assigned", "pool.low_stock"], description="CRM"
    )
    assert made["enabled"] is True
    assert made["events"] == ["code.assigned", "pool.low_stock"]
    url = f"/v1/webhook-endpoints/{made['id']}"
    shown = (await http.get(url)).json()
    assert "secret" not in shown
    assert shown["description"] == "CRM"
    listed = (await http.get("/v1/webhook-endpoints")).json()
    assert [e["id"] for e in listed["items"]] == [made["id"]]
    changed = (await http.patch(url, json={"events": ["*"], "enabled": False})).json()
    assert (changed["events"], changed["enabled"], changed["description"]) == (["*"], False, "CRM")
    cleared = (await http.patch(url, json={"description": None})).json()
    assert cleared["description"] is None

    for body in (
        {"url": "https://x.example/", "events": []},
        {"url": "https://x.example/", "events": ["code.stolen"]},
        {"url": "https://x.example/", "events": ["*", "code.assigned"]},
        {"url": "https://x.example/", "events": ["*"], "secret": "mine"},
        {"events": ["*"]},
    ):
        refused = await http.post("/v1/webhook-endpoints", json=body)
        assert refused.status_code == 422, body
    writer = await key_client("write")
    assert (await writer.get("/v1/webhook-endpoints")).status_code == 403
    assert (
        await writer.post(
            "/v1/webhook-endpoints", json={"url": "https://x.example/", "events": ["*"]}
        )
    ).status_code == 403

    assert (await http.delete(url)).status_code == 204
    assert problem_type(await http.get(url)) == "not-found"
    assert (await http.delete(url)).status_code == 404
    missing = "/v1/webhook-endpoints/00000000-0000-4000-8000-000000000000"
    for response in (
        await http.post(f"{missing}/rotate-secret"),
        await http.post(f"{missing}/test"),
        await http.get(f"{missing}/attempts"),
        await http.patch(missing, json={"enabled": True}),
    ):
        assert response.status_code == 404


async def test_attempt_pages_and_filters(http: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await endpoint(http, receiver.url, ["code.assigned"])
    await create_set(http, key="spring")
    await add_codes(http, "spring", [f"S-{n}" for n in range(5)])
    for n in range(5):
        await assign(http, "spring", f"r{n}")
    await receiver.until(lambda r: len(r.deliveries) == 5)
    found = await attempts(http, hook["id"], settled=5)
    assert len(found) == 5
    url = f"/v1/webhook-endpoints/{hook['id']}/attempts"
    first = (await http.get(url, params={"limit": 3})).json()
    second = (await http.get(url, params={"limit": 3, "cursor": first["next_cursor"]})).json()
    ids = [a["id"] for a in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 5
    assert second["next_cursor"] is None
    one = found[0]["event_id"]
    assert [
        a["event_id"] for a in (await http.get(url, params={"event_id": one})).json()["items"]
    ] == [one]
    assert (await http.get(url, params={"status": "pending"})).json()["items"] == []
    assert (await http.get(url, params={"status": "lost"})).status_code == 422
    pending = await http.post(f"{url}/{found[0]['id']}/retry")
    assert pending.status_code == 202
    again = await http.post(f"{url}/{found[0]['id']}/retry")
    assert again.status_code in (202, 409)
    if again.status_code == 409:
        assert problem_type(again) == "attempt-pending"
