"""API keys: the create body and a key as the API shows it (its secret only once)."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.models.api_key import Scope
from app.schemas.common import FutureInstant, Label, WriteModel
from app.schemas.page import Page


class ApiKeyCreate(WriteModel):
    name: Label = Field(description="What the key is for, e.g. 'checkout service'")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_at: FutureInstant | None = Field(
        default=None, description="After this instant the key is refused; in the future"
    )

    @field_validator("scopes")
    @classmethod
    def _distinct(cls, scopes: list[Scope]) -> list[Scope]:
        return list(dict.fromkeys(scopes))


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the secret")
    scopes: list[Scope]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: uuid.UUID | None


class ApiKeyCreated(ApiKeyPublic):
    secret: str = Field(description="The bearer secret. It is shown only in this response.")


class ApiKeyPage(Page[ApiKeyPublic]):
    pass
