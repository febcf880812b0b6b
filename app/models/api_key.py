"""API keys: a bearer secret shown once, stored as its SHA-256, with scopes."""

import enum
import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field

from app.models.base import Base, Col, Entity


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


class ApiKey(Entity, Base, table=True):
    __tablename__ = "api_keys"

    id: Col[uuid.UUID] = Field(default_factory=uuid.uuid4, primary_key=True)
    name: Col[str]
    # The first characters of the secret, to recognise a key in lists; not enough to use it.
    prefix: Col[str] = Field(max_length=16)
    secret_sha256: Col[str] = Field(max_length=64, unique=True)
    scopes: Col[list[str]] = Field(sa_type=ARRAY(String(16)))
    expires_at: Col[datetime | None] = Field(default=None)
    revoked_at: Col[datetime | None] = Field(default=None)
    created_by: Col[uuid.UUID | None] = Field(
        default=None, foreign_key="api_keys.id", ondelete="SET NULL"
    )

    def grants(self, scope: Scope) -> bool:
        return any(scope in IMPLIED_SCOPES[Scope(s)] for s in self.scopes)
