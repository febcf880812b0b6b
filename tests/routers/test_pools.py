import uuid

import httpx
import pytest

from tests.helpers import create_set, problem_type


@pytest.fixture
async def set_id(client: httpx.AsyncClient) -> str:
    return str((await create_set(client, key="sports"))["id"])


async def test_create_and_list_pools(client: httpx.AsyncClient, set_id: str) -> None:
    for name in ("soccer", "baseball", "Fußball ⚽"):
        response = await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": name})
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name
        assert response.json()["set_id"] == set_id
        assert response.headers["location"].endswith(response.json()["id"])
    listed = (await client.get("/v1/coupon-sets/sports/pools")).json()["items"]
    assert [pool["name"] for pool in listed] == ["default", "soccer", "baseball", "Fußball ⚽"]


async def test_pool_names_are_unique_in_a_set_ignoring_case(
    client: httpx.AsyncClient, set_id: str
) -> None:
    await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "soccer"})
    response = await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "SOCCER"})
    assert response.status_code == 409
    assert problem_type(response) == "name-taken"
    other = await create_set(client, key="other")
    elsewhere = await client.post(f"/v1/coupon-sets/{other['id']}/pools", json={"name": "soccer"})
    assert elsewhere.status_code == 201, "another set may use the same name"


async def test_get_pool_by_id_or_name(client: httpx.AsyncClient, set_id: str) -> None:
    created = (await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "Tennis"})).json()
    by_id = await client.get(f"/v1/coupon-sets/{set_id}/pools/{created['id']}")
    by_name = await client.get("/v1/coupon-sets/sports/pools/tennis")
    assert by_id.json() == by_name.json() == created
    missing = await client.get(f"/v1/coupon-sets/{set_id}/pools/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert problem_type(missing) == "not-found"


async def test_rename_pool(client: httpx.AsyncClient, set_id: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "soccer"})
    await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "golf"})
    renamed = await client.patch(
        f"/v1/coupon-sets/{set_id}/pools/soccer", json={"name": "football"}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "football"
    clash = await client.patch(f"/v1/coupon-sets/{set_id}/pools/football", json={"name": "Golf"})
    assert clash.status_code == 409
    assert problem_type(clash) == "name-taken"
    to_default = await client.patch(
        f"/v1/coupon-sets/{set_id}/pools/football", json={"name": "Default"}
    )
    assert to_default.status_code == 409
    unknown_field = await client.patch(
        f"/v1/coupon-sets/{set_id}/pools/football", json={"name": "x", "set_id": set_id}
    )
    assert unknown_field.status_code == 422


async def test_default_pool_cannot_be_renamed_or_deleted(
    client: httpx.AsyncClient, set_id: str
) -> None:
    rename = await client.patch(f"/v1/coupon-sets/{set_id}/pools/default", json={"name": "x"})
    delete = await client.delete(f"/v1/coupon-sets/{set_id}/pools/default")
    assert rename.status_code == delete.status_code == 409
    assert problem_type(rename) == problem_type(delete) == "default-pool-protected"


async def test_delete_pool(client: httpx.AsyncClient, set_id: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "soccer"})
    assert (await client.delete(f"/v1/coupon-sets/{set_id}/pools/soccer")).status_code == 204
    assert (await client.get(f"/v1/coupon-sets/{set_id}/pools/soccer")).status_code == 404


async def test_shared_sets_have_no_pools(client: httpx.AsyncClient) -> None:
    shared = await create_set(client, kind="shared", shared_code="WELCOME")
    for response in (
        await client.post(f"/v1/coupon-sets/{shared['id']}/pools", json={"name": "x"}),
        await client.get(f"/v1/coupon-sets/{shared['id']}/pools"),
    ):
        assert response.status_code == 409
        assert problem_type(response) == "pools-not-supported"


async def test_pool_names_are_validated(client: httpx.AsyncClient, set_id: str) -> None:
    for name in ("", "   ", "tab\there", "x" * 201):
        response = await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": name})
        assert response.status_code == 422, name


async def test_pools_of_a_deleted_set_go_with_it(client: httpx.AsyncClient, set_id: str) -> None:
    await client.post(f"/v1/coupon-sets/{set_id}/pools", json={"name": "soccer"})
    assert (await client.delete(f"/v1/coupon-sets/{set_id}")).status_code == 204
    assert (await client.get(f"/v1/coupon-sets/{set_id}/pools")).status_code == 404
