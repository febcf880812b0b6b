import json
import re

import httpx
import pytest

from app.services import codes as codes_service
from tests.helpers import add_codes, assign, codes_of, create_set, problem_type, redeem


@pytest.fixture
async def set_key(client: httpx.AsyncClient) -> str:
    await create_set(client, key="spring")
    return "spring"


async def test_add_codes_reports_accepted_duplicates_and_rejected(
    client: httpx.AsyncClient, set_key: str
) -> None:
    await add_codes(client, set_key, ["EXISTING-1"])
    report = await add_codes(
        client,
        set_key,
        ["A-1", "B-2", "a 1", "existing1", "", "bell\x07", "x" * 101, " --- ", "C-3"],
    )
    assert report["accepted"] == 3
    assert report["duplicates"] == 2
    assert sorted(report["duplicate_codes"]) == ["a 1", "existing1"]  # type: ignore[arg-type]
    reasons = {r["index"]: r["reason"] for r in report["rejected"]}  # type: ignore[attr-defined]
    assert set(reasons) == {4, 5, 6, 7}
    assert reasons[4] == "empty"
    listed = (await client.get(f"/v1/coupon-sets/{set_key}/codes")).json()["items"]
    assert [c["code"] for c in listed] == ["EXISTING-1", "A-1", "B-2", "C-3"]
    assert all(c["status"] == "available" and c["pool"] == "default" for c in listed)


async def test_lookups_ignore_case_and_separators(client: httpx.AsyncClient, set_key: str) -> None:
    await add_codes(client, set_key, ["SPRING AB12"])
    found = await client.get(f"/v1/coupon-sets/{set_key}/codes/spring-ab12")
    assert found.status_code == 200
    assert found.json()["code"] == "SPRING AB12"


async def test_codes_that_look_the_same_are_the_same_code(
    client: httpx.AsyncClient, set_key: str
) -> None:
    fullwidth, joined, zero_width = "\uff2b\uff29\uff34", "K\u200dIT", "K\u200bIT"
    report = await add_codes(
        client,
        set_key,
        ["KIT", fullwidth, joined, zero_width, "\u00c91", "E\u03011", "Stra\u00dfe"],
    )
    assert report["accepted"] == 3
    assert sorted(report["duplicate_codes"]) == sorted(  # type: ignore[arg-type]
        [fullwidth, joined, zero_width, "E\u03011"]
    )
    for spelling, stored in [
        ("kit", "KIT"),
        (fullwidth, "KIT"),
        ("k\u2060i-t", "KIT"),
        ("e\u0301 1", "\u00c91"),
        ("STRASSE", "Stra\u00dfe"),
    ]:
        found = await client.get(f"/v1/coupon-sets/{set_key}/codes/{spelling}")
        assert found.status_code == 200, spelling
        assert found.json()["code"] == stored
    assert (await redeem(client, "\uff4b\uff49\uff54")).status_code == 201


async def test_codes_invisible_once_normalised_are_refused(
    client: httpx.AsyncClient, set_key: str
) -> None:
    report = await add_codes(client, set_key, ["\u200b", "\u200b\u2060-", "\u0301", "OK1"])
    assert report["accepted"] == 1
    reasons = [r["reason"] for r in report["rejected"]]  # type: ignore[attr-defined]
    assert len(reasons) == 3
    assert all("nothing visible left" in reason for reason in reasons)

    for code in ["\u200b", "\u200b\ufeff"]:
        refused = await redeem(client, code)
        assert refused.status_code == 422
        assert problem_type(refused) == "validation-error"
        assert "nothing visible" in refused.text
    shared = await client.post(
        "/v1/coupon-sets",
        json={"label": "Z", "kind": "shared", "shared_code": "\u200b\u200c", "max_uses": 5},
    )
    assert shared.status_code == 422
    assert problem_type(shared) == "validation-error"
    assert shared.json()["errors"][0]["loc"] == ["body", "shared_code"]


async def test_exact_sets_refuse_invisible_and_control_characters(
    client: httpx.AsyncClient,
) -> None:
    await create_set(client, key="exact", match_mode="exact")
    report = await add_codes(client, "exact", ["K\u200bIT", "A\u0085B", "R\u202eTL", "KIT"])
    assert report["accepted"] == 1
    reasons = [r["reason"] for r in report["rejected"]]  # type: ignore[attr-defined]
    assert reasons == ["contains invisible or control characters, which an exact set refuses"] * 3
    generated = await client.post(
        "/v1/coupon-sets/exact/codes/generate",
        json={"count": 1, "length": 8, "prefix": "X\u200d"},
    )
    assert generated.status_code == 422
    assert "invisible" in generated.json()["detail"]
    shared = await client.post(
        "/v1/coupon-sets",
        json={
            "label": "Z",
            "kind": "shared",
            "match_mode": "exact",
            "shared_code": "WEL\u200bCOME",
            "max_uses": 5,
        },
    )
    assert shared.status_code == 422


async def test_exact_sets_match_codes_as_typed(client: httpx.AsyncClient) -> None:
    await create_set(client, key="exact", match_mode="exact")
    report = await add_codes(client, "exact", ["Ab-1", "AB-1", "ab1"])
    assert report["accepted"] == 3
    assert (await client.get("/v1/coupon-sets/exact/codes/ab-1")).status_code == 404
    assert (await client.get("/v1/coupon-sets/exact/codes/Ab-1")).status_code == 200


async def test_codes_go_to_the_named_pool(client: httpx.AsyncClient, set_key: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_key}/pools", json={"name": "soccer"})
    await add_codes(client, set_key, ["S1", "S2"], pool="soccer")
    await add_codes(client, set_key, ["D1"])
    soccer = await client.get(f"/v1/coupon-sets/{set_key}/codes", params={"pool": "soccer"})
    assert [c["code"] for c in soccer.json()["items"]] == ["S1", "S2"]
    pools = (await client.get(f"/v1/coupon-sets/{set_key}/pools")).json()["items"]
    stock = {p["name"]: p["stock"] for p in pools}
    assert stock["soccer"] == {"available": 2, "assigned": 0, "redeemed": 0, "void": 0, "total": 2}
    assert stock["default"]["total"] == 1
    missing = await client.post(
        f"/v1/coupon-sets/{set_key}/codes", json={"codes": ["X"], "pool": "nope"}
    )
    assert missing.status_code == 404


async def test_codes_are_refused_for_shared_sets(client: httpx.AsyncClient) -> None:
    await create_set(client, key="welcome", kind="shared", shared_code="WELCOME")
    response = await client.post("/v1/coupon-sets/welcome/codes", json={"codes": ["X"]})
    assert response.status_code == 409
    assert problem_type(response) == "wrong-set-kind"


async def test_add_codes_limits_the_list(client: httpx.AsyncClient, set_key: str) -> None:
    too_many = [f"C{n}" for n in range(10_001)]
    response = await client.post(f"/v1/coupon-sets/{set_key}/codes", json={"codes": too_many})
    assert response.status_code == 422
    empty = await client.post(f"/v1/coupon-sets/{set_key}/codes", json={"codes": []})
    assert empty.status_code == 422


async def test_generate_from_a_pattern(client: httpx.AsyncClient, set_key: str) -> None:
    response = await client.post(
        f"/v1/coupon-sets/{set_key}/codes/generate",
        json={"count": 500, "pattern": "SPRING-####-????", "min_space_ratio": 1000},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["generated"] == 500
    assert body["code_space"] == 10**4 * 26**4
    assert all(re.fullmatch(r"SPRING-\d{4}-[A-Z]{4}", c) for c in body["sample"])
    codes = []
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/coupon-sets/{set_key}/codes", params=params)).json()
        codes += [c["code"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(codes) == len(set(codes)) == 500


async def test_generate_with_length_charset_prefix_suffix(
    client: httpx.AsyncClient, set_key: str
) -> None:
    response = await client.post(
        f"/v1/coupon-sets/{set_key}/codes/generate",
        json={"count": 50, "length": 10, "charset": "digits", "prefix": "P-", "suffix": "-S"},
    )
    assert response.status_code == 201, response.text
    assert all(re.fullmatch(r"P-\d{10}-S", c) for c in response.json()["sample"])


async def test_generate_refuses_what_the_code_space_cannot_hold(
    client: httpx.AsyncClient, set_key: str
) -> None:
    response = await client.post(
        f"/v1/coupon-sets/{set_key}/codes/generate", json={"count": 100, "pattern": "##"}
    )
    assert response.status_code == 422
    assert problem_type(response) == "code-space-too-small"
    assert response.json()["code_space"] == 100
    tight = await client.post(
        f"/v1/coupon-sets/{set_key}/codes/generate",
        json={"count": 50, "pattern": "##", "min_space_ratio": 2},
    )
    assert tight.status_code == 201
    nothing_listed = await client.get(f"/v1/coupon-sets/{set_key}/codes", params={"limit": 200})
    assert len(nothing_listed.json()["items"]) == 50, "the refused request added nothing"


@pytest.mark.parametrize(
    "body",
    [
        {"count": 10},
        {"count": 10, "pattern": "ABC"},
        {"count": 10, "pattern": "##", "length": 5},
        {"count": 0, "length": 8},
        {"count": 1_000_001, "length": 8},
        {"count": 10, "length": 8, "charset": "a"},
    ],
)
async def test_generate_validates_its_request(
    client: httpx.AsyncClient, set_key: str, body: dict[str, object]
) -> None:
    response = await client.post(f"/v1/coupon-sets/{set_key}/codes/generate", json=body)
    assert response.status_code == 422, response.text


async def test_void_a_code(client: httpx.AsyncClient, set_key: str) -> None:
    await add_codes(client, set_key, ["V-1", "V-2"])
    voided = await client.post(f"/v1/coupon-sets/{set_key}/codes/v1/void")
    assert voided.status_code == 200
    assert voided.json()["status"] == "void"
    again = await client.post(f"/v1/coupon-sets/{set_key}/codes/V-1/void")
    assert again.json()["voided_at"] == voided.json()["voided_at"]
    assigned = await assign(client, set_key, "alice")
    assert assigned.json()["code"] == "V-2", "a void code is never assigned"
    gone = await assign(client, set_key, "bob")
    assert problem_type(gone) == "pool-exhausted"


async def test_filter_codes_by_status_and_recipient(
    client: httpx.AsyncClient, set_key: str
) -> None:
    await add_codes(client, set_key, ["F-1", "F-2", "F-3"])
    await assign(client, set_key, "alice")
    assigned = await client.get(f"/v1/coupon-sets/{set_key}/codes", params={"status": "assigned"})
    alice = await client.get(f"/v1/coupon-sets/{set_key}/codes", params={"recipient_id": "alice"})
    assert [c["code"] for c in assigned.json()["items"]] == ["F-1"]
    assert alice.json()["items"][0]["recipient_id"] == "alice"


async def test_a_pool_with_codes_cannot_be_deleted(client: httpx.AsyncClient, set_key: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_key}/pools", json={"name": "soccer"})
    await add_codes(client, set_key, ["S1"], pool="soccer")
    response = await client.delete(f"/v1/coupon-sets/{set_key}/pools/soccer")
    assert response.status_code == 409
    assert problem_type(response) == "pool-not-empty"


async def test_unstorable_codes_are_rejected_one_by_one(
    client: httpx.AsyncClient, set_key: str
) -> None:
    body = {"codes": ["GOOD-1", "nul\u0000", "half\ud800"]}
    response = await client.post(
        f"/v1/coupon-sets/{set_key}/codes",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    report = response.json()
    assert report["accepted"] == 1
    assert [r["index"] for r in report["rejected"]] == [1, 2]  # type: ignore[attr-defined]


async def test_an_assigned_code_can_be_returned_to_its_pool(
    client: httpx.AsyncClient, set_key: str
) -> None:
    await add_codes(client, set_key, ["R-1"])
    assert (await assign(client, set_key, "alice")).json()["code"] == "R-1"
    returned = await client.post(
        f"/v1/coupon-sets/{set_key}/codes/r1/return", json={"reason": "bounced"}
    )
    assert returned.status_code == 200, returned.text
    assert returned.json()["status"] == "available"
    assert returned.json()["recipient_id"] is None
    trail = (await client.get(f"/v1/coupon-sets/{set_key}/audit")).json()["items"]
    entry = next(e for e in trail if e["action"] == "return")
    assert (entry["code"], entry["recipient_id"]) == ("R-1", "alice")
    assert entry["details"]["reason"] == "bounced"
    # Back in the pool: the next recipient gets it, and alice may get one again.
    assert (await assign(client, set_key, "bob")).json()["code"] == "R-1"
    assert problem_type(await assign(client, set_key, "alice")) == "pool-exhausted"


async def test_only_an_assigned_unused_code_can_be_returned(
    client: httpx.AsyncClient, set_key: str
) -> None:
    await add_codes(client, set_key, ["N-1", "N-2", "N-3", "N-4"])
    path = f"/v1/coupon-sets/{set_key}/codes/{{}}/return"
    free = await client.post(path.format("N-1"))
    assert (free.status_code, problem_type(free)) == (409, "code-not-returnable")

    given = (await assign(client, set_key, "carol")).json()["code"]
    assert (await client.post(path.format(given))).status_code == 200
    twice = await client.post(path.format(given))
    assert (twice.status_code, problem_type(twice)) == (409, "code-not-returnable")

    used = (await assign(client, set_key, "dave")).json()["code"]
    await redeem(client, used)
    redeemed = await client.post(path.format(used))
    assert problem_type(redeemed) == "code-not-returnable"

    kept = (await assign(client, set_key, "erin")).json()["code"]
    await redeem(client, kept, hold_seconds=600)
    held = await client.post(path.format(kept))
    assert problem_type(held) == "code-not-returnable"
    assert "held" in held.json()["detail"]

    unknown = await client.post(path.format("NOPE"))
    assert unknown.status_code == 404
    listed = await client.get(f"/v1/coupon-sets/{set_key}/codes", params={"status": "assigned"})
    assert [c["code"] for c in listed.json()["items"]] == [kept], "refusals change nothing"


async def _listed(client: httpx.AsyncClient, set_key: str, limit: int, **filters: str) -> list[str]:
    """Every code the list shows with these filters, page by page."""
    codes: list[str] = []
    params: dict[str, object] = {"limit": limit, **filters}
    while True:
        response = await client.get(f"/v1/coupon-sets/{set_key}/codes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        codes += [item["code"] for item in page["items"]]
        if page["next_cursor"] is None:
            return codes
        params["cursor"] = page["next_cursor"]


@pytest.mark.parametrize("merged_ranges", [64, 1])
async def test_every_filter_of_the_code_list_pages_in_id_order(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, merged_ranges: int
) -> None:
    """Status and pool filters read merged index ranges (or, past MERGED_RANGES, the
    set's codes): either way the same codes, in the order they were added."""
    monkeypatch.setattr(codes_service, "MERGED_RANGES", merged_ranges)
    await create_set(client, key="f")
    for pool in ("a", "b"):
        await client.post("/v1/coupon-sets/f/pools", json={"name": pool})
    # Interleaved across pools, so ids alternate between them.
    for n in range(8):
        for pool in ("default", "a", "b"):
            await add_codes(client, "f", [f"{pool.upper()}-{n}"], pool=pool)
    for pool in ("default", "a"):
        for n in range(3):
            await assign(client, "f", f"{pool}-r{n}", pool=pool)
    await client.post("/v1/coupon-sets/f/codes/A-4/void")
    await client.post("/v1/coupon-sets/f/codes/B-5/void")
    assert (await redeem(client, "DEFAULT-1")).status_code == 201
    everything = await codes_of(client, "f")
    assert len(everything) == 24
    for filters in (
        {},
        {"status": "available"},
        {"status": "assigned"},
        {"status": "redeemed"},
        {"status": "void"},
        {"pool": "a"},
        {"pool": "b", "status": "void"},
        {"pool": "default", "status": "available"},
        {"recipient_id": "a-r1"},
        {"recipient_id": "a-r1", "status": "assigned"},
        {"recipient_id": "a-r1", "pool": "default"},
    ):
        expected = [
            c["code"]
            for c in everything
            if all(c[name] == value for name, value in filters.items())
        ]
        for limit in (1, 2, 200):
            assert await _listed(client, "f", limit, **filters) == expected, (filters, limit)
    assert await _listed(client, "f", 200, status="void") == ["A-4", "B-5"]


async def test_generate_is_not_taken_as_a_code(client: httpx.AsyncClient, set_key: str) -> None:
    wrong_method = await client.get(f"/v1/coupon-sets/{set_key}/codes/generate")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    options = await client.options(f"/v1/coupon-sets/{set_key}/codes/generate")
    assert "GET" not in options.headers.get("allow", "")
