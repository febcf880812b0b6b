"""Helpers of the assignment engine's tests."""

import json

import httpx


async def post(http: httpx.AsyncClient, ref: str, body: object, **headers: str) -> httpx.Response:
    """An assignment request, the body sent as given (bytes) or as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(
        f"/v1/coupon-sets/{ref}/assignments",
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )
