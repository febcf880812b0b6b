"""A contact's coupons and activity, the webhooks, and the API keys (admin)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.db import Session
from app.errors import AppError
from app.models.api_key import Scope
from app.pagination import PageParams, encode_cursor
from app.schemas.api_key import ApiKeyCreate
from app.services import api_keys, ui_sessions
from app.ui import data
from app.ui.web import PREFIX, FormLogin, Login, UiRoute, done, field, refused, render, require

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=UiRoute)

PAGE = 50


@router.get("/contacts")
async def contact(
    request: Request,
    session: Session,
    login: Login,
    recipient_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    require(login, Scope.read)
    found = None
    if recipient_id:
        found = await data.recipient(session, login.key, recipient_id.strip())
    return render(request, "contact.html", login, recipient_id=recipient_id or "", recipient=found)


@router.get("/webhooks")
async def webhooks(request: Request, session: Session, login: Login) -> Response:
    require(login, Scope.admin)
    endpoints = await data.webhooks(session, login.key)
    return render(request, "webhooks.html", login, endpoints=endpoints)


@router.post("/webhooks/attempts/{attempt_id}/retry")
async def retry(attempt_id: str, session: Session, posted: FormLogin) -> Response:
    login, _ = posted
    require(login, Scope.admin)
    sent = await data.retry_webhook(session, login.key, attempt_id)
    message = "Queued to be sent again." if sent else "Webhooks are not available."
    return await done(session, login, f"{PREFIX}/webhooks", message)


async def _keys_page(
    request: Request,
    session: Session,
    login: Login,
    cursor: str | None,
    created: tuple[str, str] | None = None,
) -> Response:
    require(login, Scope.admin)
    params = PageParams(limit=PAGE, cursor=cursor)
    rows = await api_keys.list_api_keys(session, params=params)
    shown = rows[:PAGE]
    return render(
        request,
        "api_keys.html",
        login,
        keys=shown,
        next_cursor=encode_cursor(shown[-1]) if len(rows) > PAGE else None,
        scopes=[s.value for s in Scope],
        created=created,
    )


@router.get("/api-keys")
async def key_list(
    request: Request,
    session: Session,
    login: Login,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    return await _keys_page(request, session, login, cursor)


@router.post("/api-keys")
async def create_key(request: Request, session: Session, posted: FormLogin) -> Response:
    """The new key's secret is in this answer only (never in a redirect or a cookie).
    The session's CSRF token changes, so reloading this answer creates no second key."""
    login, form = posted
    require(login, Scope.admin)
    scopes = [value for value in form.getlist("scopes") if isinstance(value, str)]  # type: ignore[attr-defined]
    try:
        body = ApiKeyCreate.model_validate({"name": field(form, "name"), "scopes": scopes})
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return await done(session, login, f"{PREFIX}/api-keys", message)
    key, secret = await api_keys.create_api_key(session, data=body, created_by=login.key)
    login = await ui_sessions.rotate_csrf(session, login=login)
    return await _keys_page(request, session, login, None, created=(key.name, secret))


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(
    key_id: uuid.UUID, session: Session, posted: FormLogin, keys: api_keys.Keys
) -> Response:
    """Revoking the key of this session signs it out (its sessions end with it)."""
    login, _ = posted
    require(login, Scope.admin)
    try:
        async with session.begin_nested():
            key = await api_keys.revoke_api_key(session, key_id=key_id, cache=keys)
    except AppError as exc:
        return await refused(session, login, f"{PREFIX}/api-keys", exc)
    return await done(session, login, f"{PREFIX}/api-keys", f"The key {key.name} is revoked.")
