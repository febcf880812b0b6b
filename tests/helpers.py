"""Small helpers shared by the tests."""

import httpx

PROBLEM = "application/problem+json"


def problem_type(response: httpx.Response) -> str:
    """The last segment of a problem's ``type``, after checking it is problem+json."""
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == response.status_code
    return str(body["type"]).rsplit(":", 1)[-1]


async def create_set(client: httpx.AsyncClient, **fields: object) -> dict[str, object]:
    response = await client.post("/v1/coupon-sets", json={"label": "Spring sale", **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def add_codes(
    client: httpx.AsyncClient, set_ref: object, codes: list[str], pool: str = "default"
) -> dict[str, object]:
    response = await client.post(
        f"/v1/coupon-sets/{set_ref}/codes", json={"codes": codes, "pool": pool}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def assign(
    client: httpx.AsyncClient, set_ref: object, recipient: str, **fields: object
) -> httpx.Response:
    return await client.post(
        f"/v1/coupon-sets/{set_ref}/assignments", json={"recipient_id": recipient, **fields}
    )


async def redeem(client: httpx.AsyncClient, code: str, **fields: object) -> httpx.Response:
    return await client.post("/v1/redemptions", json={"code": code, **fields})


async def import_codes(
    client: httpx.AsyncClient,
    set_ref: object,
    content: bytes,
    *,
    filename: str = "codes.csv",
    content_type: str = "text/csv",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    """A file of codes uploaded as the API takes it: form fields first, then the file."""
    return await client.post(
        f"/v1/coupon-sets/{set_ref}/imports",
        data=fields,
        files={"file": (filename, content, content_type)},
        headers=headers,
    )


async def codes_of(client: httpx.AsyncClient, set_ref: object) -> list[dict[str, object]]:
    response = await client.get(f"/v1/coupon-sets/{set_ref}/codes", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]
