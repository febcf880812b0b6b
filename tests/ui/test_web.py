"""The dashboard without a browser: sessions, cookies, CSRF, security headers and
scopes, through the app in-process (tests/ui/test_browser.py drives a real Chromium)."""

import re
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN_SECRET
from tests.helpers import create_set


def ui_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    )


async def sign_in(http: httpx.AsyncClient, secret: str = ADMIN_SECRET) -> httpx.Response:
    page = await http.get("/ui/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return await http.post(
        "/ui/sign-in", data={"api_key": secret, "csrf": csrf.group(1), "next": "/ui/sets"}
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_pages_need_a_session_and_send_security_headers(app: FastAPI) -> None:
    async with ui_client(app) as http:
        answer = await http.get("/ui/sets?q=x")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in?next=%2Fui%2Fsets%3Fq%3Dx"
        page = await http.get("/ui/sign-in")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce is not None
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert f'nonce="{nonce.group(1)}"' in page.text
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        # Every script the page loads is the service's own.
        assert re.findall(r'<script src="([^"]+)"', page.text) == ["/ui/static/app.js"]
        assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))


async def test_sign_in_sets_a_strict_http_only_cookie(app: FastAPI) -> None:
    async with ui_client(app) as http:
        answer = await sign_in(http)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sets"
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("coupons_ui=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        assert "Secure" not in cookie  # plain http here; https adds it
        sets = await http.get("/ui/sets")
        assert sets.status_code == 200
        assert "Coupon sets" in sets.text
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://test"
    ) as secure:
        answer = await sign_in(secure)
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("coupons_ui=")
        )
        assert "Secure" in cookie


async def test_a_wrong_key_or_a_forged_sign_in_is_refused(app: FastAPI) -> None:
    async with ui_client(app) as http:
        assert (await sign_in(http, "cpn_nope")).status_code == 401
        forged = await http.post(
            "/ui/sign-in", data={"api_key": ADMIN_SECRET, "csrf": "forged", "next": "/ui/sets"}
        )
        assert forged.status_code == 403
        assert "coupons_ui=" not in forged.headers.get("set-cookie", "")


async def test_forms_without_the_csrf_token_change_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await create_set(client, key="spring")
    async with ui_client(app) as http:
        await sign_in(http)
        page = await http.get("/ui/sets/spring")
        token = csrf_of(page.text)
        refused = await http.post("/ui/sets/spring/paste", data={"codes": "A1\nA2"})
        assert refused.status_code == 403
        wrong = await http.post("/ui/sets/spring/paste", data={"codes": "A1", "csrf": "x" + token})
        assert wrong.status_code == 403
        assert (await client.get("/v1/coupon-sets/spring/codes")).json()["items"] == []
        done = await http.post("/ui/sets/spring/paste", data={"codes": "A1\nA2", "csrf": token})
        assert done.status_code == 303
        codes = (await client.get("/v1/coupon-sets/spring/codes")).json()["items"]
        assert sorted(c["code"] for c in codes) == ["A1", "A2"]
        shown = await http.get("/ui/sets/spring")
        assert "2 accepted" in shown.text  # the one-time message
        assert "2 accepted" not in (await http.get("/ui/sets/spring")).text


async def test_a_revoked_key_ends_its_sessions(app: FastAPI, client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/api-keys", json={"name": "m", "scopes": ["read"]})
    async with ui_client(app) as http:
        await sign_in(http, created.json()["secret"])
        assert (await http.get("/ui/sets")).status_code == 200
        await client.delete(f"/v1/api-keys/{created.json()['id']}")
        assert (await http.get("/ui/sets")).status_code == 303
    async with app.state.engine.connect() as connection:
        left = await connection.execute(text("SELECT count(*) FROM ui_sessions"))
        assert left.scalar_one() == 0


async def test_a_session_idle_for_8_hours_is_over(app: FastAPI) -> None:
    async with ui_client(app) as http:
        await sign_in(http)
        async with app.state.engine.begin() as connection:
            await connection.execute(
                text("UPDATE ui_sessions SET last_seen_at = now() - make_interval(secs => :idle)"),
                {"idle": timedelta(hours=8, seconds=1).total_seconds()},
            )
        assert (await http.get("/ui/sets")).status_code == 303


async def test_sign_out_ends_the_session(app: FastAPI) -> None:
    async with ui_client(app) as http:
        await sign_in(http)
        page = await http.get("/ui/sets")
        out = await http.post("/ui/sign-out", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/sign-in"
        assert (await http.get("/ui/sets")).status_code == 303


async def test_scopes_apply_as_in_the_api(app: FastAPI, client: httpx.AsyncClient) -> None:
    await create_set(client, key="spring")
    created = await client.post("/v1/api-keys", json={"name": "r", "scopes": ["read"]})
    async with ui_client(app) as http:
        await sign_in(http, created.json()["secret"])
        page = await http.get("/ui/sets/spring")
        assert page.status_code == 200
        assert "Generate codes" not in page.text
        token = csrf_of(page.text)
        refused = await http.post("/ui/sets/spring/paste", data={"codes": "A1", "csrf": token})
        assert refused.status_code == 403
        assert (await http.get("/ui/api-keys")).status_code == 403
        assert (await http.get("/ui/sets/spring/export")).status_code == 403


async def test_next_never_leaves_the_dashboard(app: FastAPI) -> None:
    async with ui_client(app) as http:
        page = await http.get("/ui/sign-in?next=https://evil.example/")
        assert 'name="next" value="/ui/sets"' in page.text


async def test_generate_export_and_errors_csv_through_the_pages(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await create_set(client, key="spring")
    async with ui_client(app) as http:
        await sign_in(http)
        token = csrf_of((await http.get("/ui/sets/spring")).text)
        made = await http.post(
            "/ui/sets/spring/generate",
            data={"csrf": token, "count": "5", "pattern": "", "length": "12", "pool": "default"},
        )
        assert made.status_code == 303
        assert "Generated 5 codes" in (await http.get("/ui/sets/spring")).text
        bad = await http.post(
            "/ui/sets/spring/generate", data={"csrf": token, "count": "0", "length": "12"}
        )
        assert bad.status_code == 303
        assert "count" in (await http.get("/ui/sets/spring")).text
        export = await http.get("/ui/sets/spring/export?format=csv")
        assert export.status_code == 200
        assert len(export.text.strip().splitlines()) == 6  # header + 5 codes
        files = {"file": ("codes.csv", b"code\nX1\nX1\n", "text/csv")}
        unsigned = await http.post("/ui/sets/spring/imports", files=files)
        assert unsigned.status_code == 403
        imported = await http.post("/ui/sets/spring/imports", data={"csrf": token}, files=files)
        assert imported.status_code == 303
        page = (await http.get("/ui/sets/spring")).text
        job = re.search(r"/ui/sets/spring/imports/([0-9a-f-]+)/errors\.csv", page)
        assert job is not None
        report = await http.get(job.group(0))
        assert report.status_code == 200
        assert "X1" in report.text


async def test_a_delivery_through_the_pages(app: FastAPI, client: httpx.AsyncClient) -> None:
    await create_set(client, key="autumn")
    await client.post("/v1/coupon-sets/autumn/codes", json={"codes": ["A1", "A2"]})
    async with ui_client(app) as http:
        await sign_in(http)
        token = csrf_of((await http.get("/ui/sets/autumn")).text)
        created = await http.post(
            "/ui/sets/autumn/deliveries",
            data={
                "csrf": token,
                "label": "Mailing",
                "pool": "default",
                "template": "{{ coupon.code }}",
            },
        )
        assert created.status_code == 303
        page = created.headers["location"]
        targets = "recipient_id,address\nc-1,a@example.com\nc-2,b@example.com\nc-3,\n"
        await http.post(f"{page}/recipients", data={"csrf": token, "csv": targets})
        await http.post(f"{page}/analyze", data={"csrf": token})
        shown = (await http.get(page)).text
        assert "Not enough codes: 1 short" in shown
        refused = await http.post(f"{page}/confirm", data={"csrf": "nope"})
        assert refused.status_code == 403
        await http.post(f"{page}/limit", data={"csrf": token, "message_limit": "2"})
        await http.post(f"{page}/confirm", data={"csrf": token})
        for _ in range(100):
            progress = (await http.get(f"{page}/progress")).json()
            if progress["status"] != "sending":
                break
        assert progress == {"status": "finished", "processed": 2, "messages": 2, "assigned": 2}
        messages = await http.get(f"{page}/messages?format=csv")
        assert messages.status_code == 200
        assert "A1" in messages.text
        await http.post(f"{page}/failures", data={"csrf": token, "recipient_ids": "c-1"})
        assert "Codes returned to the pool: 1." in (await http.get(page)).text
        preview = (await http.get(f"{page}?recipient_id=nobody")).text
        assert 'role="alert"' in preview


async def test_a_new_keys_form_cannot_be_posted_twice(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with ui_client(app) as http:
        await sign_in(http)
        form = {"csrf": csrf_of((await http.get("/ui/api-keys")).text), "name": "desk"}
        created = await http.post("/ui/api-keys", data={**form, "scopes": "read"})
        assert created.status_code == 200
        assert 'id="new-secret"' in created.text
        again = await http.post("/ui/api-keys", data={**form, "scopes": "read"})
        assert again.status_code == 403
        names = [k["name"] for k in (await client.get("/v1/api-keys")).json()["items"]]
        assert names.count("desk") == 1
        # The page that showed the secret carries the new token: its forms still work.
        token = csrf_of(created.text)
        out = await http.post("/ui/sign-out", data={"csrf": token})
        assert out.status_code == 303
