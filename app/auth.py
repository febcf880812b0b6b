"""API-key authentication and scope checks, as FastAPI dependencies."""

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.db import Session
from app.errors import Forbidden, Unauthorized
from app.models.api_key import ApiKey, Scope
from app.services import api_keys

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `POST /v1/api-keys` (or COUPONS_ADMIN_API_KEY).",
)


async def current_key(
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The caller's active key; FastAPI caches it for the request."""
    challenge = {"WWW-Authenticate": 'Bearer realm="coupons"'}
    if credentials is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.", headers=challenge)
    key = await api_keys.find_active(session, secret=credentials.credentials)
    if key is None:
        raise Unauthorized("The API key is unknown, revoked or expired.", headers=challenge)
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(scope: Scope) -> object:
    """A dependency that returns the caller's key when it grants ``scope``."""

    async def authorised_key(key: CurrentKey) -> ApiKey:
        if not key.grants(scope):
            raise Forbidden(
                f"This operation needs the '{scope}' scope; this key has "
                f"{', '.join(sorted(key.scopes))}.",
                required_scope=scope.value,
            )
        return key

    return Depends(authorised_key)


AdminKey = Annotated[ApiKey, require(Scope.admin)]
WriteKey = Annotated[ApiKey, require(Scope.write)]
ReadKey = Annotated[ApiKey, require(Scope.read)]
AssignKey = Annotated[ApiKey, require(Scope.assign)]
RedeemKey = Annotated[ApiKey, require(Scope.redeem)]
