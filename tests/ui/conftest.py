"""A real headless Chromium (Debian's, through Playwright from PyPI, which never
downloads a browser here) against a server the tests start on the test database.

Every page a test opens is watched: a console error, an uncaught script error or a
request to anything but 127.0.0.1 fails the test. Screenshots go to a temporary folder,
or to ``COUPONS_UI_SCREENSHOTS`` (``make ui-screenshots`` writes docs/ui/)."""

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright

from tests.conftest import ADMIN_SECRET
from tests.external import chromium_path
from tests.live.conftest import live_instance


@pytest.fixture(scope="session")
def ui_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chromium_path()  # skip (or fail under CI) before starting anything
    with live_instance(database_url, tmp_path_factory.mktemp("ui") / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("COUPONS_UI_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Watch:
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


@dataclass
class Ui:
    page: Page
    url: str
    shots: Path

    async def sign_in(self, secret: str = ADMIN_SECRET) -> None:
        await self.page.goto(f"{self.url}/ui/sets")
        await self.page.get_by_label("API key").fill(secret)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url("**/ui/sets")

    async def fits_375px(self) -> None:
        """The page is readable at 375 px: nothing wider than the screen (tables scroll
        inside their own region)."""
        await self.page.set_viewport_size({"width": 375, "height": 800})
        wide = await self.page.evaluate("document.documentElement.scrollWidth")
        await self.page.set_viewport_size({"width": 1280, "height": 900})
        assert wide <= 375, f"{self.page.url} is {wide} px wide at 375 px"

    async def shot(self, name: str, *, full_page: bool = True) -> None:
        await self.page.screenshot(path=self.shots / f"{name}.png", full_page=full_page)


@pytest.fixture
async def ui(browser: Browser, ui_server: str, shots: Path, app: object) -> AsyncIterator[Ui]:
    """A fresh browser context on the server (``app``: the per-test cleanup)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    watch = Watch()

    async def only_local(route: Route) -> None:
        address = urlparse(route.request.url)
        if address.scheme in ("http", "https") and address.hostname != "127.0.0.1":
            watch.outside.append(route.request.url)
            await route.abort()
            return
        await route.continue_()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watch.errors.append(message.text)

    await context.route("**/*", only_local)
    context.set_default_timeout(5000)
    page = await context.new_page()
    page.on("console", console)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    yield Ui(page=page, url=ui_server, shots=shots)
    await context.close()
    assert watch.errors == [], watch.errors
    assert watch.outside == [], watch.outside


@pytest.fixture
async def api(ui_server: str, app: object) -> AsyncIterator[httpx.AsyncClient]:
    """The API of the same server, with the admin key, to set the scene."""
    async with httpx.AsyncClient(
        base_url=ui_server, headers={"Authorization": f"Bearer {ADMIN_SECRET}"}, timeout=30
    ) as client:
        yield client
