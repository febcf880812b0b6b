"""Signing in with an API key, and out."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.db import Session
from app.services import api_keys, ui_sessions
from app.ui.web import (
    COOKIE,
    PREFIX,
    SIGN_IN_CSRF_COOKIE,
    FormLogin,
    UiRoute,
    is_https,
    render,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=UiRoute)


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard: never another site (an open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/sets"


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/sets", status_code=303)


def _sign_in_page(
    request: Request, next_: str | None, *, error: str | None = None, status_code: int = 200
) -> Response:
    # Before a session exists, the form's CSRF token is a double-submit cookie.
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=status_code,
        csrf=token,
        next=_safe_next(next_),
        error=error,
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path=f"{PREFIX}/sign-in",
        max_age=3600,
    )
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    return _sign_in_page(request, next)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: Session,
    keys: api_keys.Keys,
    api_key: Annotated[str, Form(max_length=200)],
    csrf: Annotated[str, Form(max_length=100)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    expected = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return _sign_in_page(
            request, next, error="The form expired: sign in again.", status_code=403
        )
    started = await ui_sessions.sign_in(session, secret=api_key.strip(), cache=keys)
    if started is None:
        return _sign_in_page(
            request, next, error="This API key is unknown, revoked or expired.", status_code=401
        )
    token, _ = started
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path=PREFIX,
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path=f"{PREFIX}/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Session, posted: FormLogin) -> Response:
    login, _ = posted
    await ui_sessions.sign_out(session, token_sha256=login.token_sha256)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
