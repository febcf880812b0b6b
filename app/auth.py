"""API-key authentication and scope checks, as FastAPI dependencies."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from app.db import Session
from app.errors import Forbidden, Unauthorized
from app.models.api_key import ApiKey, Scope
from app.services import api_keys


def bearer_secret(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, None without one; parsed as
    FastAPI's ``HTTPBearer`` parses it. The routes and the lean assignment path both
    read the header through this."""
    scheme, secret = get_authorization_scheme_param(authorization)
    return secret if secret and scheme.lower() == "bearer" else None


class _BearerKey(SecurityBase):
    """The document's security scheme ``ApiKey`` (HTTP bearer); as a dependency, the key
    sent, or None."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="An API key from `POST /v1/api-keys` (or COUPONS_ADMIN_API_KEY)."
        )
        self.scheme_name = "ApiKey"

    async def __call__(self, request: Request) -> str | None:
        return bearer_secret(request.headers.get("Authorization"))


async def current_key(
    session: Session,
    secret: Annotated[str | None, Depends(_BearerKey())],
    keys: api_keys.Keys,
) -> ApiKey:
    """The caller's active key; FastAPI caches it for the request."""
    challenge = {"WWW-Authenticate": 'Bearer realm="coupons"'}
    if secret is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.", headers=challenge)
    key = await api_keys.find_active(session, secret=secret, cache=keys)
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
