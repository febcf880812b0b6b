import csv
import io
import re
from collections.abc import Awaitable, Callable

import httpx
import pytest
from defusedxml import ElementTree
from fastapi import FastAPI
from sqlalchemy import text

from app.services import exports
from tests.helpers import add_codes, assign, create_set, problem_type

HEADER = [
    "code",
    "status",
    "pool",
    "recipient_id",
    "address",
    "channel",
    "assigned_at",
    "redeemed_at",
    "delivery_id",
    "voided_at",
    "additional",
    "created_at",
    "metadata",
]


def rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    reader = csv.reader(io.StringIO(response.text, newline=""))
    assert next(reader) == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in reader]


async def execute(app: FastAPI, sql: str, **params: object) -> None:
    async with app.state.engine.begin() as connection:
        await connection.execute(text(sql), params)


@pytest.fixture
async def spring(client: httpx.AsyncClient) -> str:
    await create_set(client, key="spring")
    await client.post("/v1/coupon-sets/spring/pools", json={"name": "soccer"})
    await add_codes(client, "spring", ["A-1", "A-2", "A-3"])
    await add_codes(client, "spring", ["S-1"], pool="soccer")
    return "spring"


async def test_csv_export_has_every_code_with_its_assignment(
    client: httpx.AsyncClient, spring: str
) -> None:
    await assign(
        client, spring, "contact-42", address="ann@example.com", channel="email", delivery_id="d-7"
    )
    assert (await client.post("/v1/redemptions", json={"code": "A-1"})).status_code == 201
    response = await client.get(f"/v1/coupon-sets/{spring}/export", params={"format": "csv"})
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="spring-codes.csv"'
    assert response.text.endswith("\n")
    exported = rows(response)
    assert [r["code"] for r in exported] == ["A-1", "A-2", "A-3", "S-1"]
    first = exported[0]
    assert first["status"] == "redeemed"
    assert (first["pool"], first["recipient_id"], first["address"]) == (
        "default",
        "contact-42",
        "ann@example.com",
    )
    assert first["channel"] == "email"
    assert (first["delivery_id"], first["additional"]) == ("d-7", "false")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["assigned_at"])
    assert first["redeemed_at"].endswith("Z")
    assert exported[1]["status"] == "available"
    assert exported[1]["recipient_id"] == exported[1]["assigned_at"] == ""
    assert exported[3]["pool"] == "soccer"


async def test_csv_is_the_default_format(client: httpx.AsyncClient, spring: str) -> None:
    assert len(rows(await client.get(f"/v1/coupon-sets/{spring}/export"))) == 4


async def test_export_filters_by_status_and_pool(client: httpx.AsyncClient, spring: str) -> None:
    await assign(client, spring, "r1")
    url = f"/v1/coupon-sets/{spring}/export"
    assigned = rows(await client.get(url, params={"status": "assigned"}))
    assert [r["code"] for r in assigned] == ["A-1"]
    soccer = rows(await client.get(url, params={"pool": "SOCCER"}))
    assert [r["code"] for r in soccer] == ["S-1"]
    both = rows(await client.get(url, params={"pool": "default", "status": "available"}))
    assert [r["code"] for r in both] == ["A-2", "A-3"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
async def test_csv_neutralises_cells_a_spreadsheet_would_run(
    client: httpx.AsyncClient, app: FastAPI, start: str
) -> None:
    await create_set(client, key="formulas")
    payload = f"{start}HYPERLINK(1+1)"
    await add_codes(client, "formulas", ["SAFE-1"])
    # Codes with control characters cannot come in through the API; a formula can be in
    # any free-text column, so each is given one directly.
    await execute(
        app,
        "UPDATE codes SET code = :v, recipient_id = :v, address = :v, delivery_id = :v,"
        " status = 'assigned', assigned_at = now()",
        v=payload,
    )
    await execute(app, "UPDATE pools SET name = :v WHERE name = 'default'", v=payload)
    row = rows(await client.get("/v1/coupon-sets/formulas/export"))[0]
    for column in ("code", "pool", "recipient_id", "address", "delivery_id"):
        assert row[column] == "'" + payload, column


async def test_csv_leaves_harmless_cells_alone(client: httpx.AsyncClient) -> None:
    await create_set(client, key="plain")
    await add_codes(client, "plain", ["A=1", "'QUOTED", 'SAY "HI", OK'])
    exported = rows(await client.get("/v1/coupon-sets/plain/export"))
    assert [r["code"] for r in exported] == ["A=1", "'QUOTED", 'SAY "HI", OK']


async def test_xml_export_is_well_formed_and_escaped(
    client: httpx.AsyncClient, app: FastAPI, spring: str
) -> None:
    await assign(client, spring, 'r<1>&"', address="bell\x07@example.com", channel="sms")
    response = await client.get(f"/v1/coupon-sets/{spring}/export", params={"format": "xml"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml"
    assert response.headers["content-disposition"] == 'attachment; filename="spring-codes.xml"'
    root = ElementTree.fromstring(response.content)
    assert root.tag == "codes"
    assert root.attrib["set_key"] == "spring"
    codes = root.findall("code")
    assert [c.findtext("code") for c in codes] == ["A-1", "A-2", "A-3", "S-1"]
    first = codes[0]
    assert first.findtext("status") == "assigned"
    assert first.findtext("recipient_id") == 'r<1>&"'
    assert first.findtext("address") == "bell\ufffd@example.com"
    assert first.findtext("channel") == "sms"
    assert first.findtext("additional") == "false"
    assert codes[1].find("recipient_id") is None  # absent values are left out


async def test_xml_keeps_formulas_as_they_are(client: httpx.AsyncClient) -> None:
    await create_set(client, key="xmlformula")
    await add_codes(client, "xmlformula", ["=1+1"])
    response = await client.get("/v1/coupon-sets/xmlformula/export", params={"format": "xml"})
    assert ElementTree.fromstring(response.content).findtext("code/code") == "=1+1"


async def test_export_needs_the_write_scope(
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    key_client: Callable[..., Awaitable[httpx.AsyncClient]],
    spring: str,
) -> None:
    url = f"/v1/coupon-sets/{spring}/export"
    async with await key_client("read") as reader:
        refused = await reader.get(url)
        assert refused.status_code == 403
        assert problem_type(refused) == "forbidden"
    async with await key_client("write") as writer:
        assert (await writer.get(url)).status_code == 200
    assert (await anonymous.get(url)).status_code == 401


async def test_export_refusals_come_before_the_stream(
    client: httpx.AsyncClient, spring: str
) -> None:
    unknown = await client.get("/v1/coupon-sets/nope/export")
    assert unknown.status_code == 404
    assert problem_type(unknown) == "not-found"
    no_pool = await client.get(f"/v1/coupon-sets/{spring}/export", params={"pool": "golf"})
    assert no_pool.status_code == 404
    assert problem_type(no_pool) == "not-found"
    bad_format = await client.get(f"/v1/coupon-sets/{spring}/export", params={"format": "xls"})
    assert bad_format.status_code == 422
    bad_status = await client.get(f"/v1/coupon-sets/{spring}/export", params={"status": "lost"})
    assert bad_status.status_code == 422
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME15")
    shared = await client.get("/v1/coupon-sets/welcome/export")
    assert shared.status_code == 409
    assert problem_type(shared) == "wrong-set-kind"


@pytest.mark.parametrize("export_format", ["csv", "xml"])
async def test_thousands_of_codes_stream_in_many_chunks(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, export_format: str
) -> None:
    monkeypatch.setattr(exports, "CHUNK_ROWS", 700)
    await create_set(client, key="big")
    generated = await client.post(
        "/v1/coupon-sets/big/codes/generate", json={"count": 5000, "length": 12}
    )
    assert generated.status_code == 201
    await add_codes(client, "big", ["LAST-ONE"])
    listed = await client.get("/v1/coupon-sets/big/export", params={"format": export_format})
    if export_format == "csv":
        codes = [r["code"] for r in rows(listed)]
    else:
        codes = [c.findtext("code") or "" for c in ElementTree.fromstring(listed.content)]
    assert len(codes) == len(set(codes)) == 5001
    assert codes[-1] == "LAST-ONE"
