import uuid

import httpx
import pytest

from tests.helpers import create_set, problem_type


async def test_create_unique_set_answers_the_whole_object_and_its_location(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/coupon-sets",
        json={
            "label": "Spring sale",
            "key": "spring-2026",
            "kind": "unique",
            "valid_from": "2026-03-01T00:00:00Z",
            "valid_until": "2026-04-01T00:00:00+02:00",
            "description": "10 % off",
            "metadata": {"campaign": "spring", "budget": 1200, "tags": ["a", "b"]},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert uuid.UUID(body["id"])
    assert response.headers["location"] == f"/v1/coupon-sets/{body['id']}"
    assert body["key"] == "spring-2026"
    assert body["kind"] == "unique"
    assert body["status"] == "active"
    assert body["shared_code"] is None
    assert body["max_uses"] is None
    assert body["valid_from"].startswith("2026-03-01T00:00:00")
    assert body["metadata"] == {"campaign": "spring", "budget": 1200, "tags": ["a", "b"]}
    assert body["created_at"]
    assert body["updated_at"]


async def test_unique_set_gets_a_default_pool(client: httpx.AsyncClient) -> None:
    created = await create_set(client)
    pools = (await client.get(f"/v1/coupon-sets/{created['id']}/pools")).json()["items"]
    assert [pool["name"] for pool in pools] == ["default"]


async def test_create_shared_set_with_code_and_max_uses(client: httpx.AsyncClient) -> None:
    body = await create_set(client, kind="shared", shared_code="WELCOME15", max_uses=200)
    assert (body["kind"], body["shared_code"], body["max_uses"]) == ("shared", "WELCOME15", 200)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "shared"}, "body"),
        ({"kind": "unique", "shared_code": "X"}, "body"),
        ({"kind": "unique", "max_uses": 5}, "body"),
        ({"kind": "shared", "shared_code": "X", "max_uses": 0}, "body.max_uses"),
        ({"valid_from": "2026-05-01T00:00:00Z", "valid_until": "2026-05-01T00:00:00Z"}, "body"),
        ({"valid_from": "2026-05-01T00:00:00"}, "body.valid_from"),
        ({"metadata": ["not", "an", "object"]}, "body.metadata"),
        ({"metadata": {"big": "x" * 20_000}}, "body.metadata"),
        ({"key": "has space"}, "body.key"),
        ({"key": "3f1c2a9e-5b7d-4c1e-9a2b-1234567890ab"}, "body.key"),
        ({"kind": "other"}, "body.kind"),
        ({"label": "   "}, "body.label"),
        ({"label": "bell\x07"}, "body.label"),
        ({"status": "archived"}, "body.status"),
        ({"id": "3f1c2a9e-5b7d-4c1e-9a2b-1234567890ab"}, "body.id"),
    ],
)
async def test_create_refuses_invalid_input_with_field_paths(
    client: httpx.AsyncClient, fields: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/coupon-sets", json={"label": "L", **fields})
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    paths = [".".join(str(p) for p in error["loc"]) for error in response.json()["errors"]]
    assert any(path.startswith(field) for path in paths), paths
    listed = (await client.get("/v1/coupon-sets")).json()["items"]
    assert listed == [], "a refused request changes nothing"


@pytest.mark.parametrize(
    "label", ["Soldes d'été ☀️", "春のセール", "تخفيضات الربيع", "Ünïcödé 🎟️ ×2", "x" * 200]
)
async def test_unicode_labels_round_trip(client: httpx.AsyncClient, label: str) -> None:
    created = await create_set(client, label=label)
    fetched = (await client.get(f"/v1/coupon-sets/{created['id']}")).json()
    assert fetched["label"] == label


async def test_labels_are_stored_in_one_unicode_normal_form(client: httpx.AsyncClient) -> None:
    created = await create_set(client, label="Cafe\u0301")  # e + combining accent
    assert created["label"] == "Caf\u00e9"


async def test_generated_key_is_a_slug_of_the_label(client: httpx.AsyncClient) -> None:
    created = await create_set(client, label="Été: 20 % off!")
    assert str(created["key"]).startswith("ete-20-off-")
    cjk = await create_set(client, label="春のセール")
    assert str(cjk["key"]).startswith("set-")


async def test_keys_are_unique_ignoring_case(client: httpx.AsyncClient) -> None:
    await create_set(client, key="black-friday")
    response = await client.post("/v1/coupon-sets", json={"label": "B", "key": "Black-Friday"})
    assert response.status_code == 409
    assert problem_type(response) == "key-taken"


async def test_get_by_id_or_by_key_case_insensitively(client: httpx.AsyncClient) -> None:
    created = await create_set(client, key="Summer.Deals")
    by_id = await client.get(f"/v1/coupon-sets/{created['id']}")
    by_key = await client.get("/v1/coupon-sets/summer.deals")
    assert by_id.status_code == by_key.status_code == 200
    assert by_id.json() == by_key.json() == created


async def test_unknown_set_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    for ref in (str(uuid.uuid4()), "no-such-key"):
        response = await client.get(f"/v1/coupon-sets/{ref}")
        assert response.status_code == 404
        assert problem_type(response) == "not-found"


async def test_search_by_label_or_key_ignoring_case(client: httpx.AsyncClient) -> None:
    await create_set(client, label="Spring sale", key="s1")
    await create_set(client, label="Autumn", key="spring-leftovers")
    await create_set(client, label="Winter", key="w1")
    await create_set(client, label="100% off", key="p1")
    found = (await client.get("/v1/coupon-sets", params={"q": "SPRING"})).json()["items"]
    assert sorted(item["key"] for item in found) == ["s1", "spring-leftovers"]
    percent = (await client.get("/v1/coupon-sets", params={"q": "0%"})).json()["items"]
    assert [item["key"] for item in percent] == ["p1"], "% is matched literally"


async def test_filter_by_kind_and_status(client: httpx.AsyncClient) -> None:
    unique = await create_set(client, key="u")
    await create_set(client, key="s", kind="shared", shared_code="X")
    await client.post(f"/v1/coupon-sets/{unique['id']}/archive")
    shared = (await client.get("/v1/coupon-sets", params={"kind": "shared"})).json()["items"]
    archived = (await client.get("/v1/coupon-sets", params={"status": "archived"})).json()
    assert [item["key"] for item in shared] == ["s"]
    assert [item["key"] for item in archived["items"]] == ["u"]
    bad = await client.get("/v1/coupon-sets", params={"kind": "other"})
    assert bad.status_code == 422


async def test_pagination_walks_every_set_once_newest_first(client: httpx.AsyncClient) -> None:
    keys = [f"set-{n}" for n in range(7)]
    for key in keys:
        await create_set(client, key=key)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/coupon-sets", params=params)).json()
        seen += [item["key"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(keys))


async def test_page_size_is_capped(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/coupon-sets", params={"limit": 200})).status_code == 200
    response = await client.get("/v1/coupon-sets", params={"limit": 201})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize(
    "cursor", ["garbage", "bm90fGEtdXVpZA", "1.xyz", "1." + "0" * 31, "1." + "A" * 32, "1.2"]
)
async def test_a_damaged_cursor_is_refused(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/v1/coupon-sets", params={"cursor": cursor})
    assert response.status_code == 422
    assert problem_type(response) == "invalid-cursor"


async def test_patch_changes_only_the_fields_sent(client: httpx.AsyncClient) -> None:
    created = await create_set(client, description="old", metadata={"a": 1})
    response = await client.patch(
        f"/v1/coupon-sets/{created['id']}", json={"label": "New label ✨", "description": None}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "New label ✨"
    assert body["description"] is None
    assert body["metadata"] == {"a": 1}
    assert body["key"] == created["key"]
    assert body["updated_at"] >= str(created["updated_at"])


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "shared"},
        {"status": "archived"},
        {"unknown": 1},
        {"label": None},
        {"key": None},
        {"metadata": None},
        {"valid_from": "2031-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"},
    ],
)
async def test_patch_refuses_what_it_cannot_apply(
    client: httpx.AsyncClient, change: dict[str, object]
) -> None:
    created = await create_set(client, valid_until="2029-01-01T00:00:00Z")
    response = await client.patch(f"/v1/coupon-sets/{created['id']}", json=change)
    assert response.status_code == 422, response.text
    assert problem_type(response) == "validation-error"
    assert (await client.get(f"/v1/coupon-sets/{created['id']}")).json() == created


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"shared_code": "X"}, "wrong-set-kind"),
        ({"max_uses": 3}, "wrong-set-kind"),
        ({"valid_from": "2030-01-01T00:00:00Z"}, "validity-window"),
    ],
)
async def test_patch_conflicting_with_the_stored_set_is_409(
    client: httpx.AsyncClient, change: dict[str, object], problem: str
) -> None:
    created = await create_set(client, valid_until="2029-01-01T00:00:00Z")
    response = await client.patch(f"/v1/coupon-sets/{created['id']}", json=change)
    assert response.status_code == 409, response.text
    assert problem_type(response) == problem
    assert (await client.get(f"/v1/coupon-sets/{created['id']}")).json() == created


async def test_patch_shared_set_limits(client: httpx.AsyncClient) -> None:
    created = await create_set(client, kind="shared", shared_code="A", max_uses=5)
    response = await client.patch(
        f"/v1/coupon-sets/{created['id']}", json={"shared_code": "B", "max_uses": None}
    )
    assert response.status_code == 200
    assert (response.json()["shared_code"], response.json()["max_uses"]) == ("B", None)


async def test_patch_to_a_taken_key_conflicts(client: httpx.AsyncClient) -> None:
    await create_set(client, key="taken")
    other = await create_set(client, key="free")
    response = await client.patch(f"/v1/coupon-sets/{other['id']}", json={"key": "TAKEN"})
    assert response.status_code == 409
    assert problem_type(response) == "key-taken"


async def test_archive_and_unarchive(client: httpx.AsyncClient) -> None:
    created = await create_set(client)
    for _ in range(2):
        archived = await client.post(f"/v1/coupon-sets/{created['id']}/archive")
        assert archived.status_code == 200
        assert archived.json()["status"] == "archived"
    active = await client.post(f"/v1/coupon-sets/{created['key']}/unarchive")
    assert active.json()["status"] == "active"


async def test_delete_an_unused_set(client: httpx.AsyncClient) -> None:
    created = await create_set(client)
    response = await client.delete(f"/v1/coupon-sets/{created['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/v1/coupon-sets/{created['id']}")).status_code == 404
    assert (await client.delete(f"/v1/coupon-sets/{created['id']}")).status_code == 404


async def test_instants_are_strings_and_flags_are_booleans(client: httpx.AsyncClient) -> None:
    # Lax parsing would read 0 or "0" as 1970 and 0 as false; the document says otherwise.
    for body in (
        {"label": "Spring", "valid_from": 0},
        {"label": "Spring", "valid_until": "1700000000"},
        {"label": "Spring", "bind_to_recipient": 0},
    ):
        response = await client.post("/v1/coupon-sets", json=body)
        assert response.status_code == 422, body
    s = await create_set(client, valid_from="2026-01-01T00:00:00Z")
    assert s["valid_from"] == "2026-01-01T00:00:00Z"
    response = await client.get(f"/v1/coupon-sets/{s['id']}/stats/timeline", params={"to": "0.5"})
    assert response.status_code == 422
