"""API keys: a bearer secret shown once, stored as its SHA-256, with scopes."""

import enum
import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Entity
from app.models.common import Label, WriteModel
from app.pagination import Page


class Scope(enum.StrEnum):
    admin = "admin"
    write = "write"
    assign = "assign"
    redeem = "redeem"
    read = "read"


# What a scope grants besides itself. admin grants everything.
IMPLIED_SCOPES: dict[Scope, frozenset[Scope]] = {
    Scope.admin: frozenset(Scope),
    Scope.write: frozenset({Scope.write, Scope.read}),
    Scope.assign: frozenset({Scope.assign}),
    Scope.redeem: frozenset({Scope.redeem}),
    Scope.read: frozenset({Scope.read}),
}


class ApiKey(Entity, Base):
    __tablename__ = "api_keys"

    name: Mapped[str]
    # The first characters of the secret, to recognise a key in lists; not enough to use it.
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )

    def grants(self, scope: Scope) -> bool:
        return any(scope in IMPLIED_SCOPES[Scope(s)] for s in self.scopes)


class ApiKeyCreate(WriteModel):
    name: Label = Field(description="What the key is for, e.g. 'checkout service'")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_at: AwareDatetime | None = Field(
        default=None, description="After this instant the key is refused"
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
