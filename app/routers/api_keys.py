"""/v1/api-keys: create (the secret is shown once), list, get, revoke. Admin scope."""

import uuid

from fastapi import APIRouter, Response, status

from app.auth import AdminKey
from app.db import Session
from app.errors import LastAdminKey, NotFound
from app.idempotency import IdempotentRoute
from app.pagination import PageQuery, build_page
from app.problems import problem_responses
from app.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyPublic
from app.schemas.mappers import api_key_created, api_key_public
from app.services import api_keys

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"], route_class=IdempotentRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key",
    description="Answers the key with its `secret`, which is shown only this once.",
    responses=problem_responses(),
)
async def create_api_key(
    caller: AdminKey, body: ApiKeyCreate, session: Session, response: Response
) -> ApiKeyCreated:
    key, secret = await api_keys.create_api_key(session, data=body, created_by=caller)
    response.headers["Location"] = f"{router.prefix}/{key.id}"
    return api_key_created(key, secret)


@router.get("", summary="List API keys, newest first", responses=problem_responses())
async def list_api_keys(_: AdminKey, session: Session, page: PageQuery) -> ApiKeyPage:
    rows = await api_keys.list_api_keys(session, params=page)
    return build_page(ApiKeyPage, rows, page, api_key_public)


@router.get(
    "/{key_id}",
    summary="Get an API key",
    description="A revoked key (`DELETE`) is gone: `404`. The list still shows it.",
    responses=problem_responses(NotFound),
)
async def get_api_key(_: AdminKey, key_id: uuid.UUID, session: Session) -> ApiKeyPublic:
    return api_key_public(await api_keys.get_live_api_key(session, key_id))


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    description="The key stops working at once. Revoking a revoked key changes nothing.",
    responses=problem_responses(NotFound, LastAdminKey),
)
async def revoke_api_key(
    _: AdminKey, key_id: uuid.UUID, session: Session, keys: api_keys.Keys
) -> None:
    await api_keys.revoke_api_key(session, key_id=key_id, cache=keys)
