"""/docs and /redoc work without internet: every asset they load comes from the service."""

import re

import httpx
import pytest


@pytest.mark.parametrize(
    ("page", "marker"), [("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc spec-url")]
)
async def test_the_api_pages_load_nothing_from_another_host(
    anonymous: httpx.AsyncClient, page: str, marker: str
) -> None:
    response = await anonymous.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert marker in html
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from another host"
        fetched = await anonymous.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000, asset
    # No URL of another host anywhere in the page (fonts, CDNs, favicons).
    assert not re.search(r"https?://", html.replace("http://127.0.0.1", "")), html
    assert (await anonymous.get("/openapi.json")).status_code == 200
