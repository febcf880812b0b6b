"""The dashboard in a real headless Chromium: sign in, find a set, import a CSV through
the form and see its job in the history, see a delivery's shortfall and confirm it,
look a contact up, create and revoke keys and be signed out. Each page is photographed
(docs/ui.md shows them); tests/ui/conftest.py fails a test on any console error or any
request that leaves 127.0.0.1."""

import httpx
from playwright.async_api import expect

from tests.helpers import add_codes, create_set
from tests.ui.conftest import Ui


async def test_sign_in_find_a_set_and_import_a_csv(ui: Ui, api: httpx.AsyncClient) -> None:
    await create_set(api, label="Spring sale", key="spring-2026")
    await create_set(api, label="Welcome", key="welcome", kind="shared", shared_code="WELCOME15")
    await add_codes(api, "spring-2026", [f"SPRING-{i:04}" for i in range(40)])
    await api.post("/v1/coupon-sets/spring-2026/pools", json={"name": "soccer"})
    await api.post(
        "/v1/coupon-sets/spring-2026/assignments",
        json={"recipient_id": "contact-42", "address": "ann@example.com"},
    )
    page = ui.page
    await page.goto(f"{ui.url}/ui/sets")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await ui.shot("sign-in")
    await ui.sign_in()
    await ui.shot("sets")
    await ui.fits_375px()

    await page.get_by_label("Label or key").fill("spring")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("link", name="Welcome")).to_have_count(0)
    await page.get_by_role("link", name="Spring sale").click()
    await expect(page.get_by_role("heading", name="Spring sale", level=1)).to_be_visible()

    # A CSV with a header, a pool column, a repeat and a code already in the set.
    csv = "voucher,segment\nNEW-0001,soccer\nNEW-0002,soccer\nNEW-0001,soccer\nSPRING-0001,\n"
    await page.get_by_label("File (CSV, XML or a plain list)").set_input_files(
        files=[{"name": "spring.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    code_column = page.get_by_label("Code column")
    await expect(code_column.locator("option[value=voucher]")).to_have_count(1)
    await code_column.select_option("voucher")
    await page.get_by_label("Pool column").select_option("segment")
    await page.get_by_role("button", name="Upload and import").click()
    await page.wait_for_url("**/ui/sets/spring-2026#imports")
    await expect(page.locator(".flash")).to_contain_text("2 accepted, 2 duplicates")
    history = page.get_by_role("region", name="Import history")
    row = history.get_by_role("row").filter(has_text="spring.csv")
    await expect(row).to_contain_text("succeeded")
    async with page.expect_download() as download:
        await row.get_by_role("link", name="errors.csv").click()
    report = (await download.value).path()
    assert "NEW-0001" in (await report).read_text()
    soccer = (await api.get("/v1/coupon-sets/spring-2026/pools/soccer")).json()
    assert soccer["stock"]["available"] == 2

    await page.get_by_label("Status", exact=True).last.select_option("assigned")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("region", name="Codes", exact=True).last).to_contain_text(
        "contact-42"
    )
    await ui.shot("set")
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.goto(f"{ui.url}/ui/sets/spring-2026")
    wide = await page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 375, f"the page is {wide} px wide at 375 px"
    await ui.shot("set-375px", full_page=False)


async def test_a_delivery_shows_its_shortfall_and_confirms(ui: Ui, api: httpx.AsyncClient) -> None:
    await create_set(api, label="Autumn", key="autumn")
    await add_codes(api, "autumn", [f"AUTUMN-{i}" for i in range(3)])
    created = await api.post(
        "/v1/deliveries",
        json={
            "label": "Autumn mailing",
            "coupon_set_id": "autumn",
            "subject": "{{ coupon_set.label }}",
            "template": "Hi {{ recipient.first_name }}, your code: {{ coupon.code }}",
        },
    )
    delivery = created.json()["id"]
    await ui.sign_in()
    page = ui.page
    await page.goto(f"{ui.url}/ui/deliveries/{delivery}")
    targets = "recipient_id,address,first_name\n" + "".join(
        f"c-{i},fan{i}@example.com,Fan {i}\n" for i in range(5)
    )
    await page.get_by_label("Add targets as CSV").fill(targets)
    await page.get_by_role("button", name="Add targets").click()
    await expect(page.locator(".flash")).to_contain_text("5 targets added")
    await page.get_by_role("button", name="Analyse").click()
    shortfall = page.locator("#shortfall")
    await expect(shortfall).to_contain_text("Not enough codes: 2 short")
    await expect(shortfall).to_have_attribute("role", "alert")
    await page.get_by_label("Recipient id").fill("c-1")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.get_by_label("Message preview")).to_contain_text("Hi Fan 1")
    await ui.shot("delivery-shortfall")

    await page.get_by_label("Message limit").fill("3")
    await page.get_by_role("button", name="Set limit").click()
    await expect(page.locator("#enough")).to_be_visible()
    await page.get_by_role("button", name="Confirm and assign codes").click()
    await expect(page.locator("#d-status")).to_have_text("finished")
    await expect(page.get_by_role("link", name="CSV")).to_be_visible()
    await ui.shot("delivery-finished")
    await ui.fits_375px()
    finished = (await api.get(f"/v1/deliveries/{delivery}")).json()
    assert finished["status"] == "finished"
    assert finished["assigned"] == 3


async def test_a_contact_shows_its_coupons(ui: Ui, api: httpx.AsyncClient) -> None:
    await create_set(api, label="Spring sale", key="spring-2026")
    await add_codes(api, "spring-2026", ["SPRING-0001"])
    await api.post("/v1/coupon-sets/spring-2026/assignments", json={"recipient_id": "contact-42"})
    await ui.sign_in()
    page = ui.page
    await page.get_by_role("link", name="Contacts").click()
    await page.get_by_label("Recipient id").fill("contact-42")
    await page.get_by_role("button", name="Look up").click()
    await ui.shot("contact")
    coupons = page.get_by_role("region", name="Coupons", exact=True)
    assert await coupons.count() == 1
    assert "SPRING-0001" in await coupons.inner_text()
    await page.goto(f"{ui.url}/ui/webhooks")
    await ui.shot("webhooks")


async def test_a_revoked_key_is_signed_out(ui: Ui, api: httpx.AsyncClient) -> None:
    await ui.sign_in()
    page = ui.page
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("What it is for").fill("campaign desk")
    await page.get_by_role("checkbox", name="admin").check()
    await page.get_by_role("button", name="Create key").click()
    secret = await page.get_by_label("Secret").input_value()
    assert secret.startswith("cpn_")
    await ui.shot("api-keys")
    await ui.fits_375px()
    await page.goto(f"{ui.url}/ui/api-keys")
    await expect(page.get_by_label("Secret")).to_have_count(0)  # shown once

    # Signed in with the new key, it revokes itself: the session ends with it.
    await page.get_by_role("button", name="Sign out").click()
    await ui.sign_in(secret)
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_role("button", name="Revoke campaign desk").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{ui.url}/ui/sets")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert (
        await api.get("/v1/coupon-sets", headers={"Authorization": f"Bearer {secret}"})
    ).status_code == 401
