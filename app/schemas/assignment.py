"""Assignments: the body of a request for a code, and an assignment as the API shows it."""

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.models.code import Channel
from app.schemas.common import Flag, WriteModel

RecipientId = Field(min_length=1, max_length=200, description="The caller's id for the contact")


class AssignmentCreate(WriteModel):
    recipient_id: str = RecipientId
    address: str | None = Field(default=None, max_length=320, description="Email, phone…")
    channel: Channel | None = None
    pool: str | None = Field(
        default=None, min_length=1, max_length=200, description="Unique sets; `default` if absent"
    )
    delivery_id: str | None = Field(default=None, max_length=200)
    additional: Flag = Field(
        default=False,
        description="Give another code even though the recipient already holds one",
    )


class AssignmentPublic(BaseModel):
    code: str
    set_id: uuid.UUID
    set_key: str
    pool: str | None = Field(description="null for shared sets")
    recipient_id: str
    address: str | None
    channel: Channel | None
    delivery_id: str | None
    additional: bool
    assigned_at: datetime
    fallback: bool = Field(
        default=False, description="The pool was empty and the set's fallback code was given"
    )


class AssignmentPage(BaseModel):
    items: list[AssignmentPublic]
    next_cursor: str | None
