"""What every dashboard page shares: templates, the security headers (a strict CSP with
a per-response nonce, no framing, no referrer), the signed-in session from its cookie,
CSRF checks on forms, and the route class that turns refusals into pages."""

import hmac
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Session
from app.errors import AppError, Forbidden
from app.models.api_key import Scope
from app.services import ui_sessions
from app.services.ui_sessions import UiLogin

COOKIE = "coupons_ui"
TZ_COOKIE = "coupons_tz"  # the browser's IANA time zone, set by app.js
SIGN_IN_CSRF_COOKIE = "coupons_ui_signin"
PREFIX = "/ui"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    """A timestamp as UTC text; app.js rewrites <time> elements in the browser's zone."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


_templates.filters["when"] = _when
_templates.filters["count"] = _count


def _csp(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def _secure(response: Response, nonce: str | None = None) -> Response:
    response.headers["Content-Security-Policy"] = _csp(nonce or secrets.token_urlsafe(16))
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render(
    request: Request,
    template: str,
    login: UiLogin | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template(template).render(
        request=request,
        login=login,
        nonce=nonce,
        scope=Scope,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    _secure(response, nonce)
    return response


class SignInNeeded(Exception):
    """No live session: the page sends the browser to the sign-in page."""


class UiRoute(APIRoute):
    """Pages answer refusals as pages: no session → sign-in; a domain refusal or a bad
    query → an error page with its status. Every answer carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInNeeded:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(
                    f"{PREFIX}/sign-in?next={quote(target, safe='')}", status_code=303
                )
            except AppError as exc:
                response = render(
                    request,
                    "error.html",
                    None,
                    status_code=exc.status,
                    title=exc.title,
                    detail=exc.detail,
                )
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                response = render(
                    request,
                    "error.html",
                    None,
                    status_code=422,
                    title="The request is not valid",
                    detail=detail,
                )
            if "Content-Security-Policy" not in response.headers:
                _secure(response)
            return response

        return page


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


async def _login(request: Request, session: Session) -> UiLogin:
    token = request.cookies.get(COOKIE)
    login = None if not token else await ui_sessions.find(session, token=token)
    if login is None:
        raise SignInNeeded
    return login


Login = Annotated[UiLogin, Depends(_login)]


def require(login: UiLogin, scope: Scope) -> None:
    """The same refusal as the API's when the signed-in key lacks ``scope``."""
    if not login.key.grants(scope):
        raise Forbidden(
            f"This needs the '{scope}' scope; the key you signed in with has "
            f"{', '.join(sorted(login.key.scopes))}."
        )


def csrf_ok(login: UiLogin, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(login.csrf_token, sent or "")


async def _form_login(request: Request, login: Login) -> tuple[UiLogin, Mapping[str, Any]]:
    """A form post of the session: its CSRF token checked (field ``csrf`` or the
    ``X-CSRF-Token`` header)."""
    form = await request.form()
    sent = form.get("csrf")
    token = sent if isinstance(sent, str) else request.headers.get("X-CSRF-Token")
    if not csrf_ok(login, token):
        raise Forbidden("The form is stale or came from another site: reload the page.")
    return login, form


FormLogin = Annotated[tuple[UiLogin, Mapping[str, Any]], Depends(_form_login)]


def field(form: Mapping[str, Any], name: str) -> str:
    """A text field of a form, stripped ('' when absent or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def done(
    session: AsyncSession, login: UiLogin, target: str, message: str | None = None
) -> RedirectResponse:
    """Post/redirect/get: back to ``target``, with a one-time message."""
    if message:
        await ui_sessions.set_flash(session, token_sha256=login.token_sha256, message=message)
    return RedirectResponse(target, status_code=303)


async def refused(session: Any, login: UiLogin, target: str, error: AppError) -> RedirectResponse:
    return await done(session, login, target, f"Refused: {error.detail}")


async def one_chunk(body: bytes) -> AsyncIterator[bytes]:
    """Text a form posted, as the stream of chunks an upload would be."""
    yield body
