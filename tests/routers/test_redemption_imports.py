"""POST/GET /v1/coupon-sets/{set}/redemption-imports: files of redemptions."""

from collections.abc import Awaitable, Callable

import httpx

from tests.helpers import add_codes, create_set, problem_type


async def upload(
    client: httpx.AsyncClient, set_ref: object, content: bytes, **fields: str
) -> httpx.Response:
    return await client.post(
        f"/v1/coupon-sets/{set_ref}/redemption-imports",
        data=fields,
        files={"file": ("redemptions.csv", content, "text/csv")},
    )


async def test_a_redemption_file_redeems_under_the_api_rules(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["R-1", "R-2", "R-3"])
    void = await client.post(f"/v1/coupon-sets/{s['id']}/codes/R-3/void")
    assert void.status_code == 200, void.text
    content = (
        b"code,redeemed_at,order_id,amount\r\n"
        b"R-1,2026-11-20T10:00:00Z,o-1,12.50\r\n"
        b"r 2,2026-11-20T11:00:00+01:00,,\r\n"
        b"R-1,2026-11-20T12:00:00Z,o-3,1\r\n"
        b"R-3,2026-11-20T12:00:00Z,,\r\n"
        b"NOPE,2026-11-20T12:00:00Z,,\r\n"
        b"R-2,yesterday,,\r\n"
        b"R-2,2026-11-20T12:00:00Z,,abc\r\n"
    )
    response = await upload(client, s["key"], content)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "redemptions"
    assert job["status"] == "succeeded"
    assert (job["rows_read"], job["accepted"], job["rejected"]) == (7, 2, 5)
    errors = {e["line"]: e["reason"] for e in job["errors"]}
    assert errors[4].startswith("already-redeemed")
    assert errors[5].startswith("voided")
    assert errors[6].startswith("unknown-code")
    assert errors[7].startswith("redeemed_at")
    assert errors[8] == "amount: not a number"
    code = (await client.get(f"/v1/coupon-sets/{s['id']}/codes/R-1")).json()
    assert code["status"] == "redeemed"
    assert code["redeemed_at"].startswith("2026-11-20T10:00:00")
    audit = (await client.get(f"/v1/coupon-sets/{s['id']}/audit")).json()["items"]
    actions = [e["action"] for e in audit]
    assert actions.count("redeem") == 2
    assert actions.count("import_redemptions") == 1
    report = await client.get(
        f"/v1/coupon-sets/{s['id']}/redemption-imports/{job['id']}/errors.csv"
    )
    assert report.status_code == 200
    assert len(report.text.splitlines()) == 6
    history = (await client.get(f"/v1/coupon-sets/{s['id']}/redemption-imports")).json()
    assert [j["id"] for j in history["items"]] == [job["id"]]
    got = await client.get(f"/v1/coupon-sets/{s['id']}/redemption-imports/{job['id']}")
    assert got.json()["accepted"] == 2
    # A redemption import is not an import of codes.
    other = await client.get(f"/v1/coupon-sets/{s['id']}/imports/{job['id']}")
    assert other.status_code == 404


async def test_without_header_the_columns_are_positional(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["P-1", "P-2"])
    job = (await upload(client, s["id"], b"P-1,2026-11-20T10:00:00Z\nP-2\n")).json()
    assert (job["accepted"], job["rejected"]) == (2, 0), job
    redemptions = await client.get(f"/v1/coupon-sets/{s['id']}/codes/P-2")
    assert redemptions.json()["status"] == "redeemed"


async def test_all_or_nothing_keeps_no_redemption(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["A-1"])
    job = (await upload(client, s["id"], b"code\nA-1\nMISSING\n", mode="all_or_nothing")).json()
    assert job["status"] == "failed"
    assert job["accepted"] == 0
    assert job["rejected"] == 1
    code = (await client.get(f"/v1/coupon-sets/{s['id']}/codes/A-1")).json()
    assert code["status"] == "available"
    audit = (await client.get(f"/v1/coupon-sets/{s['id']}/audit")).json()["items"]
    assert [e["action"] for e in audit].count("redeem") == 0


async def test_shared_sets_respect_max_uses(client: httpx.AsyncClient) -> None:
    s = await create_set(client, kind="shared", shared_code="SPRING", max_uses=2)
    job = (await upload(client, s["id"], b"SPRING\nSPRING\nspring\n")).json()
    assert (job["accepted"], job["rejected"]) == (2, 1), job
    assert job["errors"][0]["reason"].startswith("max-uses-reached")


async def test_the_same_file_again_answers_the_first_job(client: httpx.AsyncClient) -> None:
    s = await create_set(client)
    await add_codes(client, s["id"], ["A-1"])
    first = await upload(client, s["id"], b"A-1\n")
    again = await upload(client, s["id"], b"A-1\n")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


async def test_redemption_files_are_csv_only_and_need_write(
    client: httpx.AsyncClient, key_client: Callable[..., Awaitable[httpx.AsyncClient]]
) -> None:
    s = await create_set(client)
    xml = await upload(client, s["id"], b"<codes/>", format="xml")
    assert xml.status_code == 422
    assert problem_type(xml) == "validation-error"
    async with await key_client("read") as reader:
        assert (await upload(reader, s["id"], b"A\n")).status_code == 403
